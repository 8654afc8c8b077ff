"""What both conversation stores (SQLite, PostgreSQL) hold and how a row of either becomes it.

The bottom of storage/: it imports no other storage module, so the stores and the services share
these types without importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    created_at: float = 0.0
    language: str | None = None
    voice: str | None = None
    audio_file: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    """An assistant turn cut short: `text` is what was delivered (spoken) before the cut."""
    tools: tuple[dict[str, Any], ...] = ()
    """An assistant turn's calls of server-side tools, in order: id, name, arguments, result,
    server, error, ms (services/mcp_tools.ToolStep)."""


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    system_prompt: str | None
    voice: str | None
    created_at: float
    updated_at: float
    turn_count: int = 0


@dataclass(frozen=True)
class StoredCast:
    name: str
    speakers: dict[str, str]
    created_at: float
    updated_at: float


class Row(Protocol):
    """A result row indexable by column name: sqlite3.Row, or psycopg's dict rows."""

    def __getitem__(self, key: str, /) -> Any: ...


CUT_LAST_REPLY = (
    "UPDATE turns SET text = {p}, interrupted = {t} WHERE id = "
    "(SELECT MAX(id) FROM turns WHERE conversation_id = {p} AND role = 'assistant')"
)
"""`cut_last_reply` in either store's placeholder (`{p}`) and its true (`{t}`)."""


def title_of(turns: Sequence[Turn]) -> str:
    """A new conversation's title: the start of its first user turn."""
    first = next((t.text for t in turns if t.role == "user"), "")
    return first[:60] + ("…" if len(first) > 60 else "")


def update_clauses(
    values: dict[str, str | None], clear: Sequence[str], placeholder: str
) -> tuple[list[str], list[object]]:
    """`update`'s SET clauses and their parameters, for either store's placeholder (`?`, `%s`):
    the given fields set, the names in `clear` (system_prompt, voice) set to NULL."""
    sets = [f"{name} = {placeholder}" for name, value in values.items() if value is not None]
    params: list[object] = [value for value in values.values() if value is not None]
    sets += [f"{name} = NULL" for name in clear if name in ("system_prompt", "voice")]
    return sets, params


def turn_from_row(row: Row) -> Turn:
    return Turn(
        role=row["role"],
        text=row["text"],
        created_at=row["created_at"],
        language=row["language"],
        voice=row["voice"],
        audio_file=row["audio_file"],
        timings=json.loads(row["timings"]) if row["timings"] else {},
        interrupted=bool(row["interrupted"]),
        tools=tuple(json.loads(row["tools"])) if row["tools"] else (),
    )


def conversation_from_row(row: Row) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        system_prompt=row["system_prompt"],
        voice=row["voice"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        turn_count=int(row["turn_count"]),
    )


def cast_from_row(row: Row) -> StoredCast:
    """A stored cast from a row of either store."""
    return StoredCast(row["name"], json.loads(row["speakers"]), row["created_at"], row["updated_at"])
