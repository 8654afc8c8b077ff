"""Conversation history: the stored conversations, their turns and their reply audio.

One owner for what a conversation keeps, so that the chat and spoken-turn services and the
/conversations routes reach the database and OUTPUTS_DIR through the same calls: ids are checked
here, requests on one conversation are serialised here, and a deleted conversation takes its audio
with it. Every blocking call (SQLite, files) runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager

import anyio

from backend.app.audio.encode import AudioFormat, encode_audio
from backend.app.audio.types import Audio
from backend.app.core.errors import InvalidInputError, NotFoundError, OverloadedError
from backend.app.services.outputs import ReplyAudioStore
from backend.app.storage.protocols import ConversationStorage, HeldLock
from backend.app.storage.rows import Conversation, Turn
from backend.app.voices.library import VoiceLibrary

logger = logging.getLogger(__name__)

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
LOCK_POLL_S = 0.05
"""How often a turn waiting for its conversation, held by another replica, asks again."""


def check_conversation_id(conversation_id: str | None) -> str:
    """A new id when none is given; 422 for an id that is not 1-64 letters, digits, '-' or '_'."""
    if not conversation_id:
        return uuid.uuid4().hex
    if not _ID_RE.fullmatch(conversation_id):  # fullmatch: `$` would let a trailing newline in
        raise InvalidInputError("conversation_id must be 1-64 characters of letters, digits, '-' or '_'")
    return conversation_id


class ConversationHistory:
    """The conversation store and the reply audio it refers to.

    `max_per_conversation` bounds the requests on one conversation at once (running and waiting
    for its lock): CONVERSATION_QUEUE_SIZE + 1."""

    def __init__(
        self,
        store: ConversationStorage,
        outputs: ReplyAudioStore,
        voices: VoiceLibrary,
        max_per_conversation: int = 5,
    ) -> None:
        self.store = store
        self.outputs = outputs
        self.voices = voices
        self.max_per_conversation = max_per_conversation
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    # --- serialising the requests on one conversation ------------------------------------------

    def check_room(self, conversation_id: str) -> None:
        """503 when the conversation already has CONVERSATION_QUEUE_SIZE + 1 requests in progress:
        waiting on its lock is a queue too, and bounded."""
        _, users = self._locks.get(conversation_id, (None, 0))
        if users >= self.max_per_conversation:
            raise OverloadedError(
                f"conversation {conversation_id} has {users} requests in progress; retry shortly",
                retry_after_s=2,
            )

    @asynccontextmanager
    async def serialised(self, conversation_id: str) -> AsyncGenerator[None, None]:
        """Hold the conversation's lock; the lock is dropped when nobody holds or awaits it.
        Refused (503) when too many requests wait for it already (`check_room`)."""
        self.check_room(conversation_id)
        lock, users = self._locks.get(conversation_id, (asyncio.Lock(), 0))
        self._locks[conversation_id] = (lock, users + 1)
        try:
            async with lock:
                held = await self._hold(conversation_id) if self.store.shared else None
                try:
                    yield
                finally:
                    if held is not None:
                        with anyio.CancelScope(shield=True):
                            await asyncio.to_thread(held.release)
        finally:
            lock, users = self._locks[conversation_id]
            if users == 1:
                del self._locks[conversation_id]
            else:
                self._locks[conversation_id] = (lock, users - 1)

    async def _hold(self, conversation_id: str) -> HeldLock:
        """The conversation's lock in a store other replicas share, waited for: their turns on it
        and ours are stored in order, never interleaved."""
        while True:
            with anyio.CancelScope(shield=True):  # a lock taken is never lost to a cancellation
                held = await asyncio.to_thread(self.store.try_lock, conversation_id)
            if held is not None:
                return held
            await asyncio.sleep(LOCK_POLL_S)

    # --- what a reply needs -----------------------------------------------------------------

    def require_room(self, with_audio: bool = False) -> None:
        """507 before any work when a turn (and, `with_audio`, its reply audio) could not be kept."""
        self.store.require_room()
        if with_audio:
            self.outputs.require_room()

    def disk_problem(self) -> str | None:
        """Why turns or their audio could not be kept now (a full disk, a failing database), or None."""
        return self.store.disk_problem() or self.outputs.disk_problem()

    async def check_storage(self) -> str | None:
        """`disk_problem`, with the store asked afresh (a database server that went away is seen
        at once, not at the next request that needs it)."""
        if self.store.shared:  # a database server of its own, which may have gone away
            await anyio.to_thread.run_sync(self.store.ping)
        return self.disk_problem()

    def system_prompt(self, conversation_id: str | None) -> str | None:
        """The conversation's own system prompt, if it has one (blocking)."""
        conversation = self.store.get(conversation_id) if conversation_id else None
        return conversation.system_prompt if conversation else None

    def reply_voice(self, conversation_id: str) -> str | None:
        """The conversation's own reply voice, if it is still in the library (blocking)."""
        stored = self.store.get(conversation_id)
        if not stored or not stored.voice:
            return None
        try:
            return self.voices.by_name(stored.voice).file
        except NotFoundError:
            logger.warning(
                "voice %s of conversation %s is gone; using the default", stored.voice, conversation_id
            )
            return None

    def recent_turns(self, conversation_id: str, limit: int) -> list[Turn]:
        """The newest `limit` turns, oldest first (blocking)."""
        return self.store.turns(conversation_id, limit=limit) if limit else []

    async def add_turns(self, conversation_id: str, *turns: Turn) -> None:
        """Persist turns durably (they are on disk when this returns). Shielded from cancellation:
        a reply cut short by a vanished client is still recorded."""
        with anyio.CancelScope(shield=True):
            await asyncio.to_thread(self.store.add_turns, conversation_id, turns)

    async def cut_last_reply(self, conversation_id: str, text: str) -> bool:
        """The last reply stored as only `text` of it was heard (a truncation after it was sent)."""
        with anyio.CancelScope(shield=True):
            done = await asyncio.to_thread(self.store.cut_last_reply, conversation_id, text)
        return done

    async def save_audio(self, chunks: Sequence[Audio], audio_format: AudioFormat) -> str | None:
        """Encode and keep a reply's audio for /outputs/{name}; None when there is none."""
        if not chunks:
            return None
        data = await asyncio.to_thread(encode_audio, Audio.join(chunks), audio_format)
        return await asyncio.to_thread(self.outputs.save, data, audio_format)

    # --- the /conversations routes --------------------------------------------------------------

    async def page(self, limit: int, offset: int) -> tuple[list[Conversation], int]:
        """A page of conversations, most recently active first, and the total count."""
        return await asyncio.to_thread(self.store.page, limit, offset)

    async def get(self, conversation_id: str) -> Conversation:
        """The conversation (404 when there is none; 422 for a malformed id)."""
        check_conversation_id(conversation_id)
        conversation = await asyncio.to_thread(self.store.get, conversation_id)
        if conversation is None:
            raise NotFoundError(f"no conversation {conversation_id!r}; GET /conversations lists them")
        return conversation

    async def turns(self, conversation_id: str) -> tuple[Conversation, list[Turn]]:
        """The conversation and all its turns, oldest first."""
        conversation = await self.get(conversation_id)
        return conversation, await asyncio.to_thread(self.store.turns, conversation_id)

    async def update(
        self,
        conversation_id: str,
        *,
        title: str | None = None,
        system_prompt: str | None = None,
        voice: str | None = None,
    ) -> Conversation:
        """Rename, or set the conversation's own system prompt and reply voice (None leaves a
        field as it is, "" clears it; an unknown voice is a 404)."""
        await self.get(conversation_id)
        if voice:
            voice = self.voices.by_name(voice).file
        clear = [name for name, value in (("system_prompt", system_prompt), ("voice", voice)) if value == ""]
        updated = await asyncio.to_thread(
            self.store.update,
            conversation_id,
            title=title,
            system_prompt=system_prompt or None,
            voice=voice or None,
            clear=clear,
        )
        if updated is None:
            raise NotFoundError(f"no conversation {conversation_id!r}")
        return updated

    async def delete(self, conversation_id: str) -> int:
        """Delete the conversation, its turns and their audio files; returns how many files went."""
        await self.get(conversation_id)
        async with self.serialised(conversation_id):
            files = await asyncio.to_thread(self.store.delete, conversation_id)
        if files is None:
            raise NotFoundError(f"no conversation {conversation_id!r}")
        return await asyncio.to_thread(self.outputs.remove, files)

    # --- upkeep ------------------------------------------------------------------------------

    def sweep_outputs(self) -> int:
        """One retention pass over OUTPUTS_DIR, sparing audio that young stored turns refer to."""
        protected = self.store.referenced_audio(newer_than=time.time() - self.outputs.ttl_s)
        return self.outputs.sweep(protected)

    def close(self) -> None:
        self.store.close()
