"""The named voice casts of dialogue scripts, in the conversation database (`ConversationStore.casts`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backend.app.core.errors import ConflictError

if TYPE_CHECKING:
    from backend.app.storage.conversations import ConversationStore, Row


@dataclass(frozen=True)
class StoredCast:
    name: str
    speakers: dict[str, str]
    created_at: float
    updated_at: float


class CastTable:
    """The casts of a `ConversationStore` (same database, lock and error handling)."""

    def __init__(self, store: ConversationStore) -> None:
        self._store = store

    def put(self, name: str, speakers: dict[str, str], max_casts: int) -> bool:
        """Store (or replace) a cast; True when it is new. 409 when `max_casts` exist already."""
        now = time.time()
        with self._store._transaction() as db:
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
        with self._store._lock, self._store._guarded():
            row = self._store._db.execute("SELECT * FROM casts WHERE name = ?", (name,)).fetchone()
        return cast_from_row(row) if row else None

    def all(self) -> list[StoredCast]:
        with self._store._lock, self._store._guarded():
            rows = self._store._db.execute("SELECT * FROM casts ORDER BY name").fetchall()
        return [cast_from_row(row) for row in rows]

    def delete(self, name: str) -> bool:
        with self._store._transaction() as db:
            return bool(db.execute("DELETE FROM casts WHERE name = ?", (name,)).rowcount)


def cast_from_row(row: Row) -> StoredCast:
    """A stored cast from a row of either store."""
    return StoredCast(row["name"], json.loads(row["speakers"]), row["created_at"], row["updated_at"])
