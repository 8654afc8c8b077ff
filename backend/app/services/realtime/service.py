"""The realtime service: opens sessions for every realtime transport, at most WS_MAX_SESSIONS at
once, and owns the models they share (the VAD, the end-of-turn model)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

from backend.app.audio.turn import EndOfTurn
from backend.app.audio.vad import SileroVAD
from backend.app.core.config import RealtimeSettings, VADSettings
from backend.app.core.errors import OverloadedError
from backend.app.services.conversation import ConversationService
from backend.app.services.realtime.listener import Listener
from backend.app.services.realtime.session import RealtimeSession
from backend.app.services.stt import STTService


class RealtimeService:
    """Opens sessions, at most `max_sessions` at once (both protocols together); owns the VAD
    model they share."""

    def __init__(
        self,
        conversation: ConversationService,
        stt: STTService,
        vad: SileroVAD,
        settings: RealtimeSettings,
        vad_settings: VADSettings | None = None,
        end_of_turn: EndOfTurn | None = None,
    ) -> None:
        self.conversation = conversation
        self.stt = stt
        self.vad = vad
        self.end_of_turn = end_of_turn
        """The semantic end-of-turn model (None: turns end by silence)."""
        self.settings = settings
        self.vad_settings = vad_settings or VADSettings()
        self.active = 0

    @property
    def session_settings(self) -> RealtimeSettings:
        """What every session runs under (WS_*): its limits, partial transcripts, beam size."""
        return self.settings

    @property
    def turn_detection(self) -> VADSettings:
        """The turn detection a session starts with (VAD_*, TURN_*): by silence when the
        end-of-turn model could not be loaded, whatever TURN_DETECTION says."""
        if self.end_of_turn is None:
            return self.vad_settings.model_copy(update={"turn_detection": "silence"})
        return self.vad_settings

    @contextlib.asynccontextmanager
    async def session(
        self, listener: Listener, conversation_id: str = ""
    ) -> AsyncGenerator[RealtimeSession, None]:
        """A session for the length of the block; closed (its work cancelled) on the way out."""
        if self.active >= self.settings.max_sessions:
            raise OverloadedError(
                f"{self.active} realtime sessions are open, the most this server allows; retry later",
                retry_after_s=5,
            )
        self.active += 1
        session = RealtimeSession(
            self.conversation, self.stt, self.vad, self.settings, listener, conversation_id, self.end_of_turn
        )
        try:
            yield session
        finally:
            try:
                await session.close()
            finally:
                self.active -= 1
