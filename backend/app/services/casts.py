"""Named casts: a dialogue's speakers and their voices, stored once and reused by `/tts`.

A cast is `{"speakers": {"<label>": "<voice>"}}` under a name (`PUT /casts/{name}`); `/tts` takes
`cast` and a request's own `speakers` override its entries. Casts live in the conversation
database. Each voice is checked when the cast is saved (404 unknown, 400 outside the voices dirs)
and prepared into the speaker cache then, and again at start-up, so a script that uses a cast finds
its voices ready.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping

from backend.app.core.backlog import measured_units
from backend.app.core.errors import AppError, InvalidInputError, NotFoundError
from backend.app.services.dialogue import check_mapping, resolve_voice
from backend.app.services.tts import TTSService
from backend.app.storage.protocols import CastStorage
from backend.app.storage.rows import StoredCast
from backend.app.voices.library import VoiceInfo

logger = logging.getLogger(__name__)

CAST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_CASTS = 1000


def check_name(name: str) -> str:
    if not CAST_NAME.fullmatch(name):
        raise InvalidInputError(
            "a cast name is 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


class CastService:
    def __init__(self, table: CastStorage, tts: TTSService) -> None:
        self.table = table
        self.tts = tts

    async def save(self, name: str, speakers: Mapping[str, str]) -> tuple[StoredCast, bool]:
        """Check and store a cast, its voices prepared; returns it and whether it is new."""
        check_name(name)
        if not speakers:
            raise InvalidInputError("a cast needs at least one speaker in `speakers`")
        check_mapping(speakers)
        refs = await asyncio.to_thread(
            lambda: [
                resolve_voice(self.tts.voices, self.tts.engine_voices, value.strip(), label)
                for label, value in speakers.items()
            ]
        )
        clips = [ref.clip for ref in refs if ref.clip is not None]
        if self.tts.backend.supports_cloning and clips:
            await self.tts.worker.run(lambda: self._prompts(clips))
        labels = {label.strip(): value.strip() for label, value in speakers.items()}
        created = await asyncio.to_thread(self.table.put, name, labels, MAX_CASTS)
        stored = await asyncio.to_thread(self.table.get, name)
        assert stored is not None
        return stored, created

    def _prompts(self, clips: list[VoiceInfo]) -> list[object]:
        """Each voice clip's prompt, prepared (on the TTS worker): not a synthesis, so its time
        says nothing of the model's speed."""
        measured_units(None)
        return [self.tts.speaker_prompt(clip) for clip in clips]

    async def get(self, name: str) -> StoredCast:
        stored = await asyncio.to_thread(self.table.get, check_name(name))
        if stored is None:
            raise NotFoundError(f"no cast named {name!r}; GET /casts lists them")
        return stored

    async def all(self) -> list[StoredCast]:
        return await asyncio.to_thread(self.table.all)

    async def delete(self, name: str) -> StoredCast:
        stored = await self.get(name)
        await asyncio.to_thread(self.table.delete, name)
        return stored

    def preload(self) -> None:
        """Prepare every stored cast's voices (blocking; at start-up). A voice that is gone since
        is skipped with a warning: the cast is refused only when a script uses it."""
        if not self.tts.backend.supports_cloning:
            return
        try:
            stored_casts = self.table.all()
        except AppError as e:  # a shared database that is down: serve anyway, prepare them on use
            logger.warning("the stored casts were not prepared: %s", e.message)
            return
        for stored in stored_casts:
            for label, value in stored.speakers.items():
                try:
                    ref = resolve_voice(self.tts.voices, self.tts.engine_voices, value)
                    if ref.clip is not None:
                        self.tts.speaker_prompt(ref.clip)
                except AppError as e:
                    logger.warning(
                        "cast %s: the voice of %r is not usable (%s)", stored.name, label, e.message
                    )
