"""Conversations, their turns and the named casts in PostgreSQL (DATABASE_URL), shared by every
replica of a scaled-out deployment; the same interface as the SQLite store (storage/protocols.py).

psycopg 3 with its connection pool, parameterised queries only. The schema is versioned in a
`schema_version` table; `MIGRATIONS[i]` takes version i to i+1, applied at start-up under a
transaction-level advisory lock, so that when two replicas start at once one migrates and the other
waits, then finds the work done. A turn is committed (synchronous_commit, PostgreSQL's default) when
`add_turns` returns.

A database that is down (at start-up or later) makes each call a 503 with Retry-After, and the log
names the server (never the password); the pool reconnects by itself when it returns, and the
schema is checked then.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from backend.app.core.errors import StorageOpenError, StorageUnavailableError
from backend.app.storage.conversations import (
    Conversation,
    Turn,
    _title,
    conversation_from_row,
    turn_from_row,
    update_clauses,
)
from backend.app.storage.postgres_casts import PostgresCasts

logger = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        seq BIGSERIAL,
        title TEXT NOT NULL DEFAULT '',
        system_prompt TEXT,
        voice TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE turns (
        id BIGSERIAL PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        language TEXT,
        voice TEXT,
        audio_file TEXT,
        timings TEXT,
        interrupted BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX turns_by_conversation ON turns (conversation_id, id);
    CREATE INDEX conversations_by_update ON conversations (updated_at DESC, seq DESC);
    CREATE TABLE casts (
        name TEXT PRIMARY KEY,
        speakers TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    """,
    # Reply audio, for /outputs/{name} from any replica (storage/postgres_audio.py).
    """
    CREATE TABLE reply_audio (
        name TEXT PRIMARY KEY,
        data BYTEA NOT NULL,
        size INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX reply_audio_by_age ON reply_audio (created_at);
    """,
)

MIGRATION_LOCK = 0x766F6963  # pg_advisory_xact_lock key of the migrations ("voic")
TURN_LOCK_SPACE = 0x7475726E  # first key of the per-conversation advisory locks ("turn")


def redacted(url: str) -> str:
    """The database's address without its password, for logs and errors."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL (DATABASE_URL)"
    host, port, name = params.get("host", "localhost"), params.get("port", "5432"), params.get("dbname", "")
    user = f"{params['user']}@" if params.get("user") else ""
    return f"postgresql://{user}{host}:{port}/{name}"


class PostgresStore:
    """The conversation database on PostgreSQL. Every method is blocking; async callers use a thread."""

    shared = True
    """Every replica uses it: a conversation's turns are serialised across them (`try_lock`)."""

    def __init__(self, url: str, pool_size: int = 10, timeout_s: float = 5.0) -> None:
        self.url = url
        self.where = redacted(url)
        self.engine = "postgresql"
        self.problem: str | None = None
        self.timeout_s = timeout_s
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self.pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            url,
            connection_class=psycopg.Connection[DictRow],
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout_s,
            check=ConnectionPool.check_connection,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": max(1, round(timeout_s))},
            reconnect_timeout=0,  # keep trying for as long as the server runs
            name="conversations",
        )
        self.pool.open(wait=False)
        self.casts = PostgresCasts(self)
        """The named voice casts of dialogue scripts."""

    @classmethod
    def check(cls, url: str) -> None:
        """The start-up pre-flight, which also migrates the schema: a wrong password, a missing
        database or a schema newer than this server stops start-up (`StorageOpenError`); a server
        that is down only logs (the replica serves 503s until it returns)."""
        try:
            with psycopg.connect(url, connect_timeout=5, autocommit=True, row_factory=dict_row) as conn:
                migrate(conn, redacted(url))
        except psycopg.OperationalError as e:
            message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            if "password authentication failed" in message or "does not exist" in message:
                raise StorageOpenError(f"cannot use the database {redacted(url)}: {message}") from None
            logger.error("the database %s is unreachable at start-up (%s); retrying", redacted(url), message)

    # -- connections, errors ----------------------------------------------------------------

    @contextmanager
    def connection(self, writing: bool = False) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection, its errors as the client-facing 503; the schema is brought up to
        date on first use (and again after the database came back)."""
        try:
            with self.pool.connection() as conn:
                if not self._migrated:
                    self._migrate(conn)
                yield conn
        except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as e:
            self._down(e)
        except StorageOpenError as e:  # a schema newer than this server (found after a restore)
            self.problem = str(e)
            raise StorageUnavailableError(str(e)) from e
        except psycopg.Error as e:
            self.problem = f"the conversation database failed: {e}"
            raise StorageUnavailableError(f"the conversation database cannot be used right now ({e})") from e
        self.problem = None  # reachable again (a read proves it as well as a write)

    def _down(self, error: Exception) -> None:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        self.problem = f"the database {self.where} is unreachable: {detail}"
        logger.error("the database %s is unreachable: %s", self.where, detail)
        raise StorageUnavailableError(
            "the conversation database is unreachable right now; retry shortly"
        ) from error

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with self.connection(writing=True) as conn, conn.transaction():
            yield conn

    def _migrate(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        with self._migrate_lock:
            if not self._migrated:
                migrate(conn, self.where)
                self._migrated = True

    @property
    def schema_version(self) -> int:
        with self.connection() as conn:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
        return int(row["version"]) if row else 0

    def require_room(self) -> None:
        """Disk space is the database server's to watch; nothing to check here."""

    def disk_problem(self) -> str | None:
        return self.problem

    def close(self) -> None:
        self.pool.close()

    # -- one conversation at a time, across replicas -----------------------------------------

    def try_lock(self, conversation_id: str) -> TurnLock | None:
        """The conversation's lock (a session advisory lock on a connection of its own), or None
        when another replica (or request) holds it. PostgreSQL frees it if this process dies."""
        try:
            conn = self.pool.getconn()
        except PoolTimeout as e:
            self._down(e)
        try:
            held = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS held", (TURN_LOCK_SPACE, conversation_id)
            ).fetchone()
        except psycopg.Error as e:
            self.pool.putconn(conn)
            self._down(e)
        if held and held["held"]:
            return TurnLock(self, conn, conversation_id)
        self.pool.putconn(conn)
        return None

    # -- turns --------------------------------------------------------------------------------

    def add_turns(self, conversation_id: str, turns: Sequence[Turn]) -> None:
        """Append turns (creating the conversation on its first turn), in one committed transaction."""
        now = time.time()
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at",
                (conversation_id, _text(_title(turns)), now, now),
            )
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO turns (conversation_id, role, text, created_at, language, voice, audio_file,"
                    " timings, interrupted) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            conversation_id,
                            t.role,
                            _text(t.text),
                            t.created_at or now,
                            t.language,
                            t.voice,
                            t.audio_file,
                            json.dumps(t.timings) if t.timings else None,
                            t.interrupted,
                        )
                        for t in turns
                    ],
                )

    def turns(self, conversation_id: str, limit: int | None = None) -> list[Turn]:
        query = "SELECT * FROM turns WHERE conversation_id = %s ORDER BY id DESC"
        params: tuple[object, ...] = (conversation_id,)
        if limit is not None:
            query += " LIMIT %s"
            params += (limit,)
        with self.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [turn_from_row(row) for row in reversed(rows)]

    def get(self, conversation_id: str) -> Conversation | None:
        with self.connection() as conn:
            row = conn.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) AS turn_count "
                "FROM conversations c WHERE c.id = %s",
                (conversation_id,),
            ).fetchone()
        return conversation_from_row(row) if row else None

    def page(self, limit: int, offset: int) -> tuple[list[Conversation], int]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) AS turn_count "
                "FROM conversations c ORDER BY c.updated_at DESC, c.seq DESC LIMIT %s OFFSET %s",
                (limit, offset),
            ).fetchall()
            total = conn.execute("SELECT COUNT(*) AS n FROM conversations").fetchone()
        return [conversation_from_row(r) for r in rows], int(total["n"]) if total else 0

    def update(
        self,
        conversation_id: str,
        *,
        title: str | None = None,
        system_prompt: str | None = None,
        voice: str | None = None,
        clear: Sequence[str] = (),
    ) -> Conversation | None:
        values = {"title": title, "system_prompt": system_prompt, "voice": voice}
        sets, params = update_clauses(
            {name: _text(value) if value is not None else None for name, value in values.items()}, clear, "%s"
        )
        if sets:
            with self.connection(writing=True) as conn:
                conn.execute(
                    f"UPDATE conversations SET {', '.join(sets)}, updated_at = %s WHERE id = %s",
                    (*params, time.time(), conversation_id),
                )
        return self.get(conversation_id)

    def delete(self, conversation_id: str) -> list[str] | None:
        with self._transaction() as conn:
            files = [
                str(row["audio_file"])
                for row in conn.execute(
                    "SELECT audio_file FROM turns WHERE conversation_id = %s AND audio_file IS NOT NULL",
                    (conversation_id,),
                )
            ]
            deleted = conn.execute("DELETE FROM conversations WHERE id = %s", (conversation_id,)).rowcount
        return files if deleted else None

    def referenced_audio(self, newer_than: float) -> set[str]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT audio_file FROM turns WHERE audio_file IS NOT NULL AND created_at > %s", (newer_than,)
            ).fetchall()
        return {str(r["audio_file"]) for r in rows}


def migrate(conn: psycopg.Connection[dict[str, Any]], where: str) -> None:
    """Bring the schema up to date, one replica at a time (the others wait on the lock, then find
    nothing left to do)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = int(row["version"]) if row else 0
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        if version > len(MIGRATIONS):
            raise StorageOpenError(
                f"the database {where} has schema version {version}, newer than this server "
                "knows: run the server version that wrote it"
            )
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute(script.encode())
            conn.execute("UPDATE schema_version SET version = %s", (target,))
            logger.info("database %s: schema migrated to version %d", where, target)


class TurnLock:
    """A held conversation lock; `release()` gives it (and its connection) back."""

    def __init__(self, store: PostgresStore, conn: psycopg.Connection[Any], conversation_id: str) -> None:
        self._store, self._conn, self._id = store, conn, conversation_id

    def release(self) -> None:
        try:
            self._conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (TURN_LOCK_SPACE, self._id))
        except psycopg.Error:
            self._conn.close()  # the session ends, and PostgreSQL drops its locks with it
        self._store.pool.putconn(self._conn)


def _text(text: str) -> str:
    """PostgreSQL's text holds no NUL character (SQLite's does): it is stored as U+FFFD."""
    return text.replace("\x00", "\ufffd")
