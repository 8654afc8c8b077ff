"""Conversations and their turns (and the named voice casts of dialogue scripts), persisted in
SQLite under DATA_DIR.

One connection, one writer (a lock serialises every statement), WAL journal with synchronous=FULL: a
turn is on disk when `add_turns` returns, so a reply acknowledged to a client survives a crash or a
SIGKILL. The schema is versioned with `PRAGMA user_version`; `MIGRATIONS[i]` takes version i to i+1.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from backend.app.core.errors import StorageFullError, StorageOpenError, StorageUnavailableError
from backend.app.core.paths import low_disk, require_free_disk
from backend.app.storage.casts import CastTable
from backend.app.storage.rows import (
    CUT_LAST_REPLY,
    Conversation,
    Turn,
    conversation_from_row,
    title_of,
    turn_from_row,
    update_clauses,
)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL DEFAULT '',
        system_prompt TEXT,
        voice TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE turns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text TEXT NOT NULL,
        created_at REAL NOT NULL,
        language TEXT,
        voice TEXT,
        audio_file TEXT,
        timings TEXT
    );
    CREATE INDEX turns_by_conversation ON turns (conversation_id, id);
    CREATE INDEX conversations_by_update ON conversations (updated_at DESC);
    """,
    # A reply cut short by the user speaking over it (barge-in) or by the client going away.
    "ALTER TABLE turns ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;",
    # Named casts for dialogue scripts: speaker label -> voice, as JSON.
    """
    CREATE TABLE casts (
        name TEXT PRIMARY KEY,
        speakers TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # The calls of server-side tools an assistant turn made, with their results, as JSON.
    "ALTER TABLE turns ADD COLUMN tools TEXT;",
)


_WHAT_TO_DO = (
    "Move the file aside (with its -wal and -shm files) to start with an empty database, or "
    "restore it from a backup; then start the server again"
)


class ConversationStore:
    """The conversation database. Every method is blocking; async callers use a thread.

    Opening checks the file (`PRAGMA quick_check`) and that it can be written: a database that is
    not one, is damaged or sits on a read-only DATA_DIR is refused at start-up (`StorageOpenError`,
    naming the file and what to do), not found out request by request. At run time, a full disk is
    a 507 (`StorageFullError`) and any other database failure a 503 (`StorageUnavailableError`);
    `problem` says what went wrong last, for /health, until a write succeeds again. Writes are
    refused up front, before any work, while less than `min_free_bytes` is free on its disk.
    """

    shared = False
    """One process owns the file."""

    def __init__(self, path: Path, min_free_bytes: int = 0) -> None:
        self.path = path
        self.engine = f"sqlite {path.name}"
        self.where = str(path.parent)
        self.min_free_bytes = min_free_bytes
        self.problem: str | None = None
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StorageOpenError(f"cannot open the conversation database {path}: {e}") from e
        try:
            self._db.row_factory = sqlite3.Row
            checked = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if checked != "ok":
                raise StorageOpenError(
                    f"the conversation database {path} is damaged ({checked}). {_WHAT_TO_DO}"
                )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            self._db.execute("BEGIN IMMEDIATE")  # can it be written (read-only file or directory)?
            self._db.execute("ROLLBACK")
        except sqlite3.Error as e:
            self._db.close()
            if getattr(e, "sqlite_errorcode", None) in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
                advice = f"DATA_DIR ({path.parent}) and the file must be writable by the server"
            else:
                advice = _WHAT_TO_DO
            raise StorageOpenError(f"the conversation database {path} cannot be used ({e}). {advice}") from e
        except StorageOpenError:
            self._db.close()
            raise
        self.casts = CastTable(self._transaction, self._reading)
        """The named voice casts of dialogue scripts."""

    @classmethod
    def check(cls, path: Path) -> None:
        """Open and close the database once: the start-up pre-flight (`StorageOpenError`)."""
        cls(path).close()

    @contextmanager
    def _guarded(self, writing: bool = False) -> Iterator[None]:
        """sqlite3's errors as the client-facing ones; `problem` follows the last outcome."""
        try:
            yield
        except sqlite3.Error as e:
            full = getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            self.problem = f"the conversation database failed: {e}"
            if full:
                raise StorageFullError(
                    "no space left for the conversation database; the server's operator must free some"
                ) from e
            raise StorageUnavailableError(f"the conversation database cannot be used right now ({e})") from e
        if writing:
            self.problem = None

    def require_room(self) -> None:
        """507 before any work when the disk has less than MIN_FREE_DISK_MB free."""
        require_free_disk(self.path.parent, self.min_free_bytes, "the conversation database")

    def disk_problem(self) -> str | None:
        """Why writes would be refused now, or None (for /health)."""
        return low_disk(self.path.parent, self.min_free_bytes) or self.problem

    def ping(self) -> None:
        """Nothing to ask: the file is this process's own (`disk_problem` looks at its disk)."""

    def _migrate(self) -> None:
        with self._lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StorageOpenError(
                    f"{self.path} has schema version {version}, newer than this server knows: "
                    "run the server version that wrote it"
                )
            for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
                self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {target}; COMMIT;")

    def try_lock(self, conversation_id: str) -> NoLock:
        """One process owns the file: the in-process lock (services/history.py) is all it takes."""
        return NoLock()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Flush the write-ahead log into the database file, then close (at shutdown)."""
        with self._lock:
            # Closing matters more than the checkpoint (SQLite redoes it at the next open).
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The single writer's transaction: committed (durably) on exit, rolled back on error."""
        with self._lock, self._guarded(writing=True):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for a read, under the lock, its errors as the client-facing ones."""
        with self._lock, self._guarded():
            yield self._db

    def add_turns(self, conversation_id: str, turns: Sequence[Turn]) -> None:
        """Append turns (creating the conversation on its first turn), durably, in one transaction."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at",
                (conversation_id, title_of(turns), now, now),
            )
            db.executemany(
                "INSERT INTO turns (conversation_id, role, text, created_at, language, voice, audio_file,"
                " timings, interrupted, tools) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        conversation_id,
                        t.role,
                        t.text,
                        t.created_at or now,
                        t.language,
                        t.voice,
                        t.audio_file,
                        json.dumps(t.timings) if t.timings else None,
                        int(t.interrupted),
                        json.dumps(t.tools, ensure_ascii=False) if t.tools else None,
                    )
                    for t in turns
                ],
            )

    def turns(self, conversation_id: str, limit: int | None = None) -> list[Turn]:
        """The conversation's turns, oldest first (the newest `limit` when given)."""
        query = "SELECT * FROM turns WHERE conversation_id = ? ORDER BY id DESC"
        params: tuple[object, ...] = (conversation_id,)
        if limit is not None:
            query += " LIMIT ?"
            params += (limit,)
        with self._lock, self._guarded():
            rows = self._db.execute(query, params).fetchall()
        return [turn_from_row(row) for row in reversed(rows)]

    def cut_last_reply(self, conversation_id: str, text: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(CUT_LAST_REPLY.format(p="?", t="1"), (text, conversation_id))
        return cursor.rowcount > 0

    def get(self, conversation_id: str) -> Conversation | None:
        with self._lock, self._guarded():
            row = self._db.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) AS turn_count "
                "FROM conversations c WHERE c.id = ?",
                (conversation_id,),
            ).fetchone()
        return conversation_from_row(row) if row else None

    def page(self, limit: int, offset: int) -> tuple[list[Conversation], int]:
        """A page of conversations, most recently updated first, and the total count."""
        with self._lock, self._guarded():
            rows = self._db.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) AS turn_count "
                "FROM conversations c ORDER BY c.updated_at DESC, c.rowid DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            total = int(self._db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0])
        return [conversation_from_row(r) for r in rows], total

    def update(
        self,
        conversation_id: str,
        *,
        title: str | None = None,
        system_prompt: str | None = None,
        voice: str | None = None,
        clear: Sequence[str] = (),
    ) -> Conversation | None:
        """Set the given fields (None leaves a field as it is; names in `clear` are set to NULL)."""
        values = {"title": title, "system_prompt": system_prompt, "voice": voice}
        sets, params = update_clauses(values, clear, "?")
        if sets:
            with self._lock, self._guarded(writing=True):
                self._db.execute(
                    f"UPDATE conversations SET {', '.join(sets)}, updated_at = ? WHERE id = ?",
                    (*params, time.time(), conversation_id),
                )
        return self.get(conversation_id)

    def delete(self, conversation_id: str) -> list[str] | None:
        """Remove a conversation; returns the audio file names of its turns (None if unknown)."""
        with self._transaction() as db:
            files = [
                str(row[0])
                for row in db.execute(
                    "SELECT audio_file FROM turns WHERE conversation_id = ? AND audio_file IS NOT NULL",
                    (conversation_id,),
                )
            ]
            deleted = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount
        return files if deleted else None

    def referenced_audio(self, newer_than: float) -> set[str]:
        """Audio file names referenced by turns created after `newer_than` (epoch seconds)."""
        with self._lock, self._guarded():
            rows = self._db.execute(
                "SELECT audio_file FROM turns WHERE audio_file IS NOT NULL AND created_at > ?", (newer_than,)
            ).fetchall()
        return {str(r[0]) for r in rows}


class NoLock:
    def release(self) -> None:
        pass
