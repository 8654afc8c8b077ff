"""What the services need of a conversation store: SQLite under DATA_DIR (storage/conversations.py,
the default) or PostgreSQL shared by replicas (storage/postgres.py, DATABASE_URL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from backend.app.storage.rows import Conversation, StoredCast, Turn


class CastStorage(Protocol):
    def put(self, name: str, speakers: dict[str, str], max_casts: int) -> bool: ...
    def get(self, name: str) -> StoredCast | None: ...
    def all(self) -> list[StoredCast]: ...
    def delete(self, name: str) -> bool: ...


class HeldLock(Protocol):
    def release(self) -> None: ...


class ConversationStorage(Protocol):
    """Every method is blocking; async callers use a thread."""

    problem: str | None
    shared: bool
    """True when other processes use the same store (their turns must be serialised with ours)."""

    @property
    def casts(self) -> CastStorage: ...

    engine: str
    """What /health names it by: `sqlite conversations.db`, `postgresql`."""
    where: str
    """Its directory, or its server's address (without the password)."""

    @property
    def schema_version(self) -> int: ...
    def require_room(self) -> None: ...
    def disk_problem(self) -> str | None: ...
    def ping(self) -> None:
        """Ask the store now whether it can be used (a database server may have gone), within a
        short timeout; `problem` says the outcome. Blocking."""

    def try_lock(self, conversation_id: str) -> HeldLock | None: ...
    def add_turns(self, conversation_id: str, turns: Sequence[Turn]) -> None: ...
    def turns(self, conversation_id: str, limit: int | None = None) -> list[Turn]: ...
    def cut_last_reply(self, conversation_id: str, text: str) -> bool:
        """The conversation's last assistant turn becomes `text`, marked interrupted (a reply the
        listener stopped hearing part-way); False when it has none."""
        ...

    def get(self, conversation_id: str) -> Conversation | None: ...
    def page(self, limit: int, offset: int) -> tuple[list[Conversation], int]: ...
    def update(
        self,
        conversation_id: str,
        *,
        title: str | None = None,
        system_prompt: str | None = None,
        voice: str | None = None,
        clear: Sequence[str] = (),
    ) -> Conversation | None: ...
    def delete(self, conversation_id: str) -> list[str] | None: ...
    def referenced_audio(self, newer_than: float) -> set[str]: ...
    def close(self) -> None: ...
