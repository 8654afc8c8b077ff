"""One spoken turn: transcribe the user's audio, reply, speak the reply and keep it for download."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from backend.app.audio.encode import AudioFormat, encode_audio
from backend.app.backends.protocols import TranscribeOptions
from backend.app.core.errors import NotFoundError
from backend.app.services.chat import ChatService, check_conversation_id
from backend.app.services.outputs import OutputStore
from backend.app.services.stt import STTService
from backend.app.services.tts import TTSService
from backend.app.storage.conversations import Turn as StoredTurn
from backend.app.text.normalize import clean_for_speech, has_speakable_content

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Turn:
    transcript: str
    reply: str
    conversation_id: str | None
    audio_name: str | None
    timings: dict[str, float]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


class ConversationService:
    """STT -> chat -> TTS, calling the three services directly."""

    def __init__(self, stt: STTService, chat: ChatService, tts: TTSService, outputs: OutputStore) -> None:
        self.stt = stt
        self.chat = chat
        self.tts = tts
        self.outputs = outputs

    def _stored_voice(self, conversation_id: str) -> str | None:
        """The conversation's own reply voice, if it still exists in the library."""
        stored = self.chat.store.get(conversation_id)
        if not stored or not stored.voice:
            return None
        try:
            return self.tts.voices.by_name(stored.voice).file
        except NotFoundError:
            logger.warning(
                "voice %s of conversation %s is gone; using the default", stored.voice, conversation_id
            )
            return None

    async def turn(
        self,
        audio: bytes,
        conversation_id: str | None = None,
        voice: str | None = None,
        options: TranscribeOptions | None = None,
        audio_format: AudioFormat = "wav",
    ) -> Turn:
        """Run one turn and store it (user turn with its language and STT time; assistant turn with
        the voice, audio file and timings). Silence gives an empty transcript and reply, no audio,
        and stores nothing."""
        if voice:
            self.tts.choose_voice(voice, None)  # fail fast on an unknown voice, before any work
        cid = check_conversation_id(conversation_id) if conversation_id else None
        started = time.perf_counter()
        asked = time.time()
        transcription = await self.stt.transcribe(audio, options or TranscribeOptions())
        timings = {"stt_ms": _ms(started)}
        if not transcription.text:
            timings.update(llm_ms=0.0, tts_ms=0.0, total_ms=_ms(started))
            return Turn("", "", cid, None, timings)

        text = self.chat.check_text(transcription.text)
        cid = cid or check_conversation_id(None)
        async with self.chat.serialised(cid):
            step = time.perf_counter()
            reply = await self.chat.generate(cid, text)
            timings["llm_ms"] = _ms(step)

            step = time.perf_counter()
            if not voice:
                voice = await asyncio.to_thread(self._stored_voice, cid)
            name, used_voice = None, None
            if has_speakable_content(clean_for_speech(reply)):
                speech = await self.tts.synthesize(reply, voice=voice)
                used_voice = speech.voice.file if speech.voice else None
                data = await asyncio.to_thread(encode_audio, speech.audio, audio_format)
                name = await asyncio.to_thread(self.outputs.save, data, audio_format)
            timings["tts_ms"] = _ms(step)
            timings["total_ms"] = _ms(started)
            await self.chat.store_turns(
                cid,
                StoredTurn(
                    "user",
                    text,
                    created_at=asked,
                    language=transcription.language,
                    timings={"stt_ms": timings["stt_ms"]},
                ),
                StoredTurn("assistant", reply, voice=used_voice, audio_file=name, timings=dict(timings)),
            )
        return Turn(transcription.text, reply, cid, name, timings)
