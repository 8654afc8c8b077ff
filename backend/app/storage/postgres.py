"""Conversations, their turns and the named casts in PostgreSQL (DATABASE_URL), shared by every
replica of a scaled-out deployment; the same interface as the SQLite store (storage/protocols.py).

psycopg 3 with its connection pool, parameterised queries only. The schema is versioned in a
`schema_version` table (storage/postgres_schema.py), migrated at start-up under a
transaction-level advisory lock, so that when two replicas start at once one migrates and the other
waits, then finds the work done. A turn is committed (synchronous_commit, PostgreSQL's default) when
`add_turns` returns.

A database that is down (at start-up or later) makes each call a 503 with Retry-After; `ping`
notices it without waiting for a request (/health and the app's watch call it), and the outage is
logged once when it begins and once when it ends, naming the server, never the password. The pool
reconnects by itself when it returns; the schema is checked then.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from backend.app.core.errors import StorageOpenError, StorageUnavailableError
from backend.app.storage.postgres_address import redacted, scrubbed
from backend.app.storage.postgres_casts import PostgresCasts
from backend.app.storage.postgres_schema import migrate
from backend.app.storage.rows import (
    CUT_LAST_REPLY,
    Conversation,
    Turn,
    conversation_from_row,
    title_of,
    turn_from_row,
    update_clauses,
)

logger = logging.getLogger(__name__)

TURN_LOCK_SPACE = 0x7475726E  # first key of the per-conversation advisory locks ("turn")
PING_TIMEOUT_S = 2.0
"""The longest `ping` waits for the database's answer (libpq's shortest connect timeout too)."""
PING_EVERY_S = 1.0
"""A `ping` within this long of the last one takes its answer (/health needs no key: a caller
that asks it in a loop costs the database one query a second at most)."""


def _detail(error: BaseException) -> str:
    """An error's first line: libpq's messages add hints on the lines after it."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class PostgresStore:
    """The conversation database on PostgreSQL. Every method is blocking; async callers use a thread."""

    shared = True
    """Every replica uses it: a conversation's turns are serialised across them (`try_lock`)."""

    def __init__(
        self, url: str, pool_size: int = 10, timeout_s: float = 5.0, ping_timeout_s: float = PING_TIMEOUT_S
    ) -> None:
        self.url = url
        self.where = redacted(url)
        self.engine = "postgresql"
        self.problem: str | None = None
        self.timeout_s = timeout_s
        self.ping_timeout_s = ping_timeout_s
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time the outage began; None while reachable
        # A connection of its own for `ping`, never a pooled one: every turn in progress may hold
        # one of those (a full pool is no outage).
        self._ping_lock = threading.Lock()
        self._ping: Future[None] | None = None
        self._pinged_at = 0.0  # monotonic time the last ping was answered (or gave up)
        self._ping_conn: psycopg.Connection[Any] | None = None
        # The store says when the database goes and comes back, once each; the pool would warn at
        # every reconnection attempt (each request and each ping makes one while it is down).
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        self.pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            url,
            connection_class=psycopg.Connection[DictRow],
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout_s,
            check=ConnectionPool.check_connection,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": max(1, round(timeout_s))},
            # A failed connection attempt is given up at once: the next request that needs one
            # tries again, and `ping` tells /health meanwhile.
            reconnect_timeout=0,
            name="conversations",
        )
        self.pool.open(wait=False)
        self.casts = PostgresCasts(self.transaction, self.connection)
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
            text = str(e).strip()
            message = scrubbed(text.splitlines()[-1] if text else type(e).__name__, url)
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
            failure = scrubbed(str(e), self.url)
            self.problem = f"the conversation database failed: {failure}"
            raise StorageUnavailableError(
                f"the conversation database cannot be used right now ({failure})"
            ) from e
        self.problem = None  # reachable again (a read proves it as well as a write)
        self._reachable()

    def _down(self, error: Exception) -> None:
        self._unreachable(_detail(error))
        raise StorageUnavailableError(
            "the conversation database is unreachable right now; retry shortly"
        ) from error

    # -- is it there? ---------------------------------------------------------------------------

    def ping(self) -> None:
        """Ask the database now whether it answers, waiting at most `ping_timeout_s`; `problem`
        says the outcome (an outage, or None once it answers again). Blocking, and cheap: a
        `SELECT 1` on a connection kept for it, one ping at a time (a caller that finds one under
        way waits for that one)."""
        with self._ping_lock:
            if (
                self._ping is not None
                and self._ping.done()
                and time.monotonic() - self._pinged_at < PING_EVERY_S
            ):
                return  # answered a moment ago: `problem` says how
            if self._ping is None or self._ping.done():
                self._ping = Future()
                # A daemon thread: a database that stopped answering mid-query must not hold up
                # the process's exit.
                threading.Thread(
                    target=self._select_one, args=(self._ping,), name="database-ping", daemon=True
                ).start()
            pending = self._ping
        try:
            pending.result(timeout=self.ping_timeout_s)
        except FutureTimeout:
            self._unreachable(f"no answer within {self.ping_timeout_s:g} s")
        except psycopg.Error as e:
            self._unreachable(_detail(e))
        else:
            self._reachable()
        self._pinged_at = time.monotonic()

    def _select_one(self, done: Future[None]) -> None:
        """`SELECT 1` on the kept connection, or on a new one when its session has ended (a
        database that restarted ends them all: that alone is no outage)."""
        try:
            conn = self._ping_conn
            if conn is not None and not conn.closed:
                try:
                    conn.execute("SELECT 1")
                    done.set_result(None)
                    return
                except psycopg.Error:
                    conn.close()
            self._ping_conn = None
            timeout = max(2, round(self.ping_timeout_s))  # libpq counts whole seconds, 2 at least
            conn = self._ping_conn = psycopg.connect(self.url, autocommit=True, connect_timeout=timeout)
            conn.execute("SELECT 1")
            done.set_result(None)
        except Exception as e:  # handed to the waiting `ping`
            done.set_exception(e)

    def _unreachable(self, detail: str) -> None:
        """The database cannot be reached: said in `problem`, and logged when the outage begins."""
        detail = scrubbed(detail, self.url)
        with self._state_lock:
            self.problem = f"the database {self.where} is unreachable: {detail}"
            began = self._down_since is None
            if began:
                self._down_since = time.monotonic()
        if began:
            logger.error("the database %s is unreachable: %s; retrying", self.where, detail)

    def _reachable(self) -> None:
        """The database answers: an outage, if there was one, is over (and logged so)."""
        with self._state_lock:
            if self._down_since is None:
                return
            lasted = time.monotonic() - self._down_since
            self._down_since = None
            self.problem = None
        logger.info("the database %s is reachable again, after %.0f s", self.where, lasted)

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection inside one transaction (committed on the way out, else rolled
        back), for the store's own writes and those of its tables (casts, reply audio)."""
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
        conn = self._ping_conn
        if conn is not None and (self._ping is None or self._ping.done()):  # else it is stuck in a ping
            conn.close()

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
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at",
                (conversation_id, _text(title_of(turns)), now, now),
            )
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO turns (conversation_id, role, text, created_at, language, voice, audio_file,"
                    " timings, interrupted, tools) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
                            _text(json.dumps(t.tools, ensure_ascii=False)) if t.tools else None,
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

    def cut_last_reply(self, conversation_id: str, text: str) -> bool:
        with self.transaction() as conn:
            return conn.execute(CUT_LAST_REPLY.format(p="%s", t="TRUE"), (text, conversation_id)).rowcount > 0

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
        with self.transaction() as conn:
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
