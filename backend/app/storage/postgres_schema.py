"""The PostgreSQL store's schema: its versioned migrations, applied by one replica at a time (a
transaction-level advisory lock; the others wait, then find the work done)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from backend.app.core.errors import StorageOpenError

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
    # The calls of server-side tools an assistant turn made, with their results, as JSON.
    "ALTER TABLE turns ADD COLUMN tools TEXT;",
)

MIGRATION_LOCK = 0x766F6963  # pg_advisory_xact_lock key of the migrations ("voic")


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
