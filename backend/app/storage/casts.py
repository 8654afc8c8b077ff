"""The named voice casts of dialogue scripts, in the conversation database (`ConversationStore.casts`)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from backend.app.core.errors import ConflictError
from backend.app.storage.rows import StoredCast, cast_from_row

Connect = Callable[[], AbstractContextManager[sqlite3.Connection]]
"""A handle on the store's one connection, held under its lock with its error handling for as
long as the `with` block lasts (the table shares the store's database without reaching into it)."""


class CastTable:
    """The casts of a `ConversationStore` (same database, lock and error handling)."""

    def __init__(self, transaction: Connect, reading: Connect) -> None:
        """`transaction` is the single writer's transaction (committed on exit, rolled back on
        error); `reading` the connection for a read."""
        self._transaction = transaction
        self._reading = reading

    def put(self, name: str, speakers: dict[str, str], max_casts: int) -> bool:
        """Store (or replace) a cast; True when it is new. 409 when `max_casts` exist already."""
        now = time.time()
        with self._transaction() as db:
            exists = db.execute("SELECT 1 FROM casts WHERE name = ?", (name,)).fetchone() is not None
            if not exists and int(db.execute("SELECT COUNT(*) FROM casts").fetchone()[0]) >= max_casts:
                raise ConflictError(f"there are {max_casts} casts already, the limit; delete one first")
            db.execute(
                "INSERT INTO casts (name, speakers, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET speakers = excluded.speakers, "
                "updated_at = excluded.updated_at",
                (name, json.dumps(speakers, ensure_ascii=False), now, now),
            )
        return not exists

    def get(self, name: str) -> StoredCast | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM casts WHERE name = ?", (name,)).fetchone()
        return cast_from_row(row) if row else None

    def all(self) -> list[StoredCast]:
        with self._reading() as db:
            rows = db.execute("SELECT * FROM casts ORDER BY name").fetchall()
        return [cast_from_row(row) for row in rows]

    def delete(self, name: str) -> bool:
        with self._transaction() as db:
            return bool(db.execute("DELETE FROM casts WHERE name = ?", (name,)).rowcount)
