"""The named voice casts of dialogue scripts in PostgreSQL (`PostgresStore.casts`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from backend.app.core.errors import ConflictError
from backend.app.storage.rows import StoredCast, cast_from_row

Connect = Callable[[], AbstractContextManager[psycopg.Connection[dict[str, Any]]]]
"""A handle on a pooled connection of the store, with its error handling (outages as 503s), for as
long as the `with` block lasts: the table shares the store's pool without reaching into it."""


class PostgresCasts:
    """The casts table of a `PostgresStore`."""

    def __init__(self, transaction: Connect, connection: Connect) -> None:
        """`transaction` is a connection inside a transaction (committed on exit, rolled back on
        error); `connection` one for a read."""
        self._transaction = transaction
        self._connection = connection

    def put(self, name: str, speakers: dict[str, str], max_casts: int) -> bool:
        now = time.time()
        with self._transaction() as conn:
            conn.execute("LOCK TABLE casts IN SHARE ROW EXCLUSIVE MODE")  # the count check and insert as one
            exists = conn.execute("SELECT 1 FROM casts WHERE name = %s", (name,)).fetchone() is not None
            count = conn.execute("SELECT COUNT(*) AS n FROM casts").fetchone()
            if not exists and count and int(count["n"]) >= max_casts:
                raise ConflictError(f"there are {max_casts} casts already, the limit; delete one first")
            conn.execute(
                "INSERT INTO casts (name, speakers, created_at, updated_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET speakers = excluded.speakers, "
                "updated_at = excluded.updated_at",
                (name, json.dumps(speakers, ensure_ascii=False), now, now),
            )
        return not exists

    def get(self, name: str) -> StoredCast | None:
        with self._connection() as conn:
            row = conn.execute("SELECT * FROM casts WHERE name = %s", (name,)).fetchone()
        return cast_from_row(row) if row else None

    def all(self) -> list[StoredCast]:
        with self._connection() as conn:
            rows = conn.execute("SELECT * FROM casts ORDER BY name").fetchall()
        return [cast_from_row(row) for row in rows]

    def delete(self, name: str) -> bool:
        with self._transaction() as conn:
            return bool(conn.execute("DELETE FROM casts WHERE name = %s", (name,)).rowcount)
