"""A realtime session's settings and its turns: how a committed utterance is transcribed,
stored and answered (services/realtime.py decides when; this is what a turn does)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field

import anyio

from backend.app.audio.types import Audio
from backend.app.core.config import VADSettings
from backend.app.core.errors import AppError, InternalError
from backend.app.core.values import TranscribeOptions, Transcription
from backend.app.services.chat import elapsed_ms
from backend.app.services.conversation import Commitment, ConversationService, Turn, TurnEvent
from backend.app.services.realtime.reply import (
    ClientGone,
    EarlyReply,
    Listener,
    ReplySender,
    TimedTranscription,
)

logger = logging.getLogger(__name__)


class SessionError(Exception):
    """A request the session cannot do now (nothing to commit, no reply to cancel...): the
    protocol tells the client, and the session goes on."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


@dataclass(frozen=True)
class ReplyOptions:
    """How replies are made: the voice (None: the conversation's or the default), spoken or in
    text only, the system prompt (None: the conversation's or LLM_SYSTEM_PROMPT), a shorter
    token limit than LLM_MAX_TOKENS."""

    voice: str | None = None
    speak: bool = True
    instructions: str | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class SessionConfig:
    """How a session takes turns; each protocol sets it from its own messages."""

    vad: VADSettings | None = field(default_factory=VADSettings)
    """Turn detection; None: a turn ends only when the client commits its audio."""
    respond: bool = True
    """Answer each turn (False: transcribe and store it only, as dictation does)."""
    interrupt: bool = True
    """Speech that starts during a reply cuts it."""
    options: TranscribeOptions = field(default_factory=TranscribeOptions)
    reply: ReplyOptions = field(default_factory=ReplyOptions)
    partials_every_s: float = 0.0
    """Live partial transcripts after each this many seconds of new speech (0: none)."""
    usage: bool = False
    """Count each reply's tokens (`Turn.usage`)."""


class TurnRunner:
    """What a session's turn tasks run; RealtimeSession builds on it and holds the state."""

    conversation: ConversationService
    conversation_id: str
    config: SessionConfig
    _listener: Listener
    _reply: ReplySender
    _storing: asyncio.Task[None] | None
    _asked: asyncio.Task[None] | None
    _hearing: set[asyncio.Task[None]]
    """Turn tasks not yet replying: until then, a cut withdraws the reply (`_withdrawn`) instead
    of cancelling the task, so that the user's words are kept."""
    _withdrawn: set[asyncio.Task[None]]

    # --- turns and replies ------------------------------------------------------------------------

    async def _timed_transcribe(self, utterance: Audio) -> TimedTranscription:
        """The transcription and the milliseconds it took (queue wait included)."""
        began = time.perf_counter()
        transcription = await self.conversation.stt.transcribe_audio(utterance, self.config.options)
        return transcription, elapsed_ms(began)

    async def _transcribe(
        self, utterance: Audio, speculative: asyncio.Task[TimedTranscription] | None
    ) -> TimedTranscription:
        if speculative is not None:
            try:
                return await speculative
            except AppError:
                pass  # e.g. the STT queue was full then; try once more now
        return await self._timed_transcribe(utterance)

    async def _open_reply(
        self,
        text: str | None,
        language: str | None,
        timings: dict[str, float],
        started: float,
        options: ReplyOptions,
        commitment: Commitment | None = None,
        asked: float | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """The reply to `text` (None: to the stored conversation), admitted now (503 when the
        models are full); `started` is when the user finished speaking, `commitment` makes it
        pre-emptive."""
        if text is not None:
            text = await asyncio.to_thread(self.conversation.chat.fit_spoken, text, language)
        admission = self.conversation.check_ready(None, self.conversation_id)
        return self.conversation.respond(
            text,
            self.conversation_id,
            voice=options.voice,
            language=language,
            asked=asked if asked is not None else time.time(),
            started=started,
            timings=timings,
            played=self._reply.played_s,
            admission=admission,
            commitment=commitment,
            speak=options.speak,
            system_prompt=options.instructions,
            max_tokens=options.max_tokens,
            usage=self.config.usage,
        )

    async def _early_reply(self, early: EarlyReply) -> None:
        """Begin the reply on the transcript so far; its events wait in `early.events`."""
        try:
            transcription, stt_ms = await early.transcription
            if not transcription.text:
                return
            timings = {"stt_ms": stt_ms}
            events = await self._open_reply(
                transcription.text,
                transcription.language,
                timings,
                time.perf_counter(),
                self.config.reply,
                early.commitment,
            )
            async with aclosing(events) as stream:
                async for event in stream:
                    await early.events.put(event)
        except Exception as e:  # handed to the turn, which answers without it
            await early.events.put(e)
        finally:
            early.events.put_nowait(None)

    async def _transcribe_only(
        self,
        utterance: Audio,
        speculative: asyncio.Task[TimedTranscription] | None,
        previous: asyncio.Task[None] | None,
    ) -> None:
        """A turn that is not answered: transcribed, stored, told — in order with the others."""
        try:
            transcription, stt_ms = await self._transcribe(utterance, speculative)
        except AppError as e:
            if previous is not None:
                await asyncio.wait([previous])
            await self._listener.transcription_failed(e)
            return
        if previous is not None:
            await asyncio.wait([previous])
        await self._store_transcript(transcription, stt_ms)

    async def _run_turn(
        self,
        utterance: Audio,
        speculative: asyncio.Task[TimedTranscription] | None,
        ended_at: float,
        early: EarlyReply | None = None,
        previous: asyncio.Task[None] | None = None,
    ) -> None:
        asked = time.time()
        task = asyncio.current_task()
        assert task is not None
        try:
            try:
                # stt_ms is the transcription's own time, even when it ran during the trailing
                # silence and was ready before the turn began (then it adds nothing to total_ms).
                transcript = await self._transcribe(utterance, speculative)
            except AppError as e:
                await self._listener.transcription_failed(e)
                return
            waiting = [t for t in (previous, self._storing) if t is not None]
            if waiting:
                await asyncio.wait(waiting)
            self._hearing.discard(task)  # from here on, a cut cancels
            if task in self._withdrawn:
                await self._keep_unanswered(transcript)
                return
            self._reply.reset()
            transcription, stt_ms = transcript
            timings = {"stt_ms": stt_ms}
            if not transcription.text:
                await self._listener.transcribed(transcription, stt_ms)
                timings["total_ms"] = elapsed_ms(ended_at)
                self._reply.finished_in = asyncio.current_task()  # nothing to answer, nor to cut
                await self._listener.reply_finished(Turn("", "", self.conversation_id, None, timings))
                return
            if early is not None and await self._reply.take_over(early, transcript, ended_at):
                return
            events = await self._open_reply(
                transcription.text, transcription.language, timings, ended_at, self.config.reply, asked=asked
            )
            async with aclosing(events) as stream:
                async for event in stream:
                    await self._reply.send(event, transcript)
        except AppError as e:
            # The turn fails (a busy model, an over-long text); the session goes on.
            await self._listener.reply_failed(e)
        except ClientGone:
            pass  # the transport notices too, and ends the session
        except Exception:
            # A fault of ours: logged, and the client told (a response must never end in silence).
            logger.exception("realtime turn failed in conversation %s", self.conversation_id)
            await self._tell_failed()
        finally:
            self._hearing.discard(task)
            self._withdrawn.discard(task)
            if early is not None and early.task is not None and not early.task.done():
                early.task.cancel()  # a barge-in: the reply is stored as far as it was heard
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([early.task])

    async def _store_transcript(self, transcription: Transcription, stt_ms: float) -> None:
        """The user's words stored (unless none were heard), then told."""
        if transcription.text:
            await self.conversation.add_user_turn(
                self.conversation_id, transcription.text, transcription.language, stt_ms
            )
        await self._listener.transcribed(transcription, stt_ms)

    async def _keep_unanswered(self, transcript: TimedTranscription) -> None:
        """A turn cut before its reply began: the user's words are stored and told all the same,
        then the turn is told finished, unanswered (`interrupted`, with nothing said)."""
        transcription, stt_ms = transcript
        await self._store_transcript(transcription, stt_ms)
        turn = Turn(transcription.text, "", self.conversation_id, None, {"stt_ms": stt_ms}, interrupted=True)
        await self._listener.reply_finished(turn)

    async def _run_response(self, options: ReplyOptions, previous: asyncio.Task[None] | None) -> None:
        """A reply the client asked for, on the conversation as stored."""
        try:
            # Typed items and turns still being transcribed come first.
            waiting = [t for t in (previous, self._storing) if t is not None]
            if waiting:
                await asyncio.wait(waiting)
            if self._asked is asyncio.current_task():
                self._asked = None  # it begins: a cut from now on is an ordinary one
            self._reply.reset()
            await self._reply.start()
            events = await self._open_reply(None, None, {}, time.perf_counter(), options)
            async with aclosing(events) as stream:
                async for event in stream:
                    await self._reply.send(event)
        except AppError as e:
            await self._listener.reply_failed(e)
        except ClientGone:
            pass
        except Exception:
            logger.exception("realtime response failed in conversation %s", self.conversation_id)
            await self._tell_failed()

    async def _tell_failed(self) -> None:
        """The client hears that its reply failed (unless it is gone)."""
        try:
            await self._listener.reply_failed(
                InternalError("the reply failed on the server; the conversation goes on")
            )
        except Exception:  # the client is gone, or cannot be told: the transport ends the session
            logger.debug("could not report a failed reply", exc_info=True)
