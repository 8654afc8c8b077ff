"""Stored conversations: list, read, rename or re-prompt, delete."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from backend.app.api.deps import ChatServiceDep, OutputStoreDep, TTSServiceDep, require_json
from backend.app.api.schemas import (
    ERROR_RESPONSES,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    ConversationPatch,
    TurnOut,
)
from backend.app.core.errors import NotFoundError
from backend.app.services.chat import check_conversation_id
from backend.app.storage.conversations import Conversation, ConversationStore

router = APIRouter(tags=["conversations"])


async def _existing(store: ConversationStore, conversation_id: str) -> Conversation:
    check_conversation_id(conversation_id)
    conversation = await asyncio.to_thread(store.get, conversation_id)
    if conversation is None:
        raise NotFoundError(f"no conversation {conversation_id!r}; GET /conversations lists them")
    return conversation


@router.get("/conversations", response_model=ConversationPage)
async def list_conversations(
    chat: ChatServiceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ConversationPage:
    """Conversations, most recently active first."""
    page, total = await asyncio.to_thread(chat.store.page, limit, offset)
    return ConversationPage(
        conversations=[ConversationOut(**asdict(c)) for c in page], total=total, limit=limit, offset=offset
    )


@router.get("/conversations/{conversation_id}", response_model=ConversationDetail, responses=ERROR_RESPONSES)
async def get_conversation(conversation_id: str, chat: ChatServiceDep) -> ConversationDetail:
    """A conversation with all its turns, oldest first."""
    conversation = await _existing(chat.store, conversation_id)
    turns = await asyncio.to_thread(chat.store.turns, conversation_id)
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
    conversation_id: str, body: ConversationPatch, chat: ChatServiceDep, tts: TTSServiceDep
) -> ConversationOut:
    """Rename, or set this conversation's own system prompt and reply voice ("" clears them)."""
    await _existing(chat.store, conversation_id)
    voice = body.voice
    if voice:
        voice = tts.voices.by_name(voice).file  # 404 for an unknown voice
    clear = [name for name in ("system_prompt", "voice") if getattr(body, name) == ""]
    updated = await asyncio.to_thread(
        chat.store.update,
        conversation_id,
        title=body.title,
        system_prompt=body.system_prompt or None,
        voice=voice or None,
        clear=clear,
    )
    if updated is None:
        raise NotFoundError(f"no conversation {conversation_id!r}")
    return ConversationOut(**asdict(updated))


@router.delete("/conversations/{conversation_id}", responses=ERROR_RESPONSES)
async def delete_conversation(
    conversation_id: str, chat: ChatServiceDep, outputs: OutputStoreDep
) -> dict[str, object]:
    """Delete a conversation, its turns and their audio files."""
    await _existing(chat.store, conversation_id)
    async with chat.serialised(conversation_id):
        files = await asyncio.to_thread(chat.store.delete, conversation_id)
    if files is None:
        raise NotFoundError(f"no conversation {conversation_id!r}")
    removed = await asyncio.to_thread(outputs.remove, files)
    return {"deleted": conversation_id, "audio_files_removed": removed}
