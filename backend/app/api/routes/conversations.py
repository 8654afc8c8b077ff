"""Stored conversations: list, read, rename or re-prompt, delete."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from backend.app.api.deps import HistoryDep, require_json
from backend.app.api.schemas import (
    ERROR_RESPONSES,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    ConversationPatch,
    ToolStepOut,
    TurnOut,
)

router = APIRouter(tags=["conversations"])


@router.get("/conversations", response_model=ConversationPage)
async def list_conversations(
    history: HistoryDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ConversationPage:
    """Conversations, most recently active first."""
    page, total = await history.page(limit, offset)
    return ConversationPage(
        conversations=[ConversationOut(**asdict(c)) for c in page], total=total, limit=limit, offset=offset
    )


@router.get("/conversations/{conversation_id}", response_model=ConversationDetail, responses=ERROR_RESPONSES)
async def get_conversation(conversation_id: str, history: HistoryDep) -> ConversationDetail:
    """A conversation with all its turns, oldest first."""
    conversation, turns = await history.turns(conversation_id)
    return ConversationDetail(
        **asdict(conversation),
        turns=[
            TurnOut(
                role="user" if t.role == "user" else "assistant",
                text=t.text,
                created_at=t.created_at,
                language=t.language,
                voice=t.voice,
                audio_url=f"/outputs/{t.audio_file}" if t.audio_file else None,
                timings=t.timings,
                interrupted=t.interrupted,
                tools=[ToolStepOut.model_validate(step) for step in t.tools],
            )
            for t in turns
        ],
    )


@router.patch(
    "/conversations/{conversation_id}",
    response_model=ConversationOut,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_json)],
)
async def update_conversation(
    conversation_id: str, body: ConversationPatch, history: HistoryDep
) -> ConversationOut:
    """Rename, or set this conversation's own system prompt and reply voice ("" clears them)."""
    updated = await history.update(
        conversation_id, title=body.title, system_prompt=body.system_prompt, voice=body.voice
    )
    return ConversationOut(**asdict(updated))


@router.delete("/conversations/{conversation_id}", responses=ERROR_RESPONSES)
async def delete_conversation(conversation_id: str, history: HistoryDep) -> dict[str, object]:
    """Delete a conversation, its turns and their audio files."""
    removed = await history.delete(conversation_id)
    return {"deleted": conversation_id, "audio_files_removed": removed}
