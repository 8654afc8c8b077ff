"""A realtime session's turns and replies, run in order: what a turn does once the session
(services/realtime/session.py, the turn-taking) has decided that it ends.

A turn task transcribes the utterance (or takes the transcript made during the trailing silence),
then, unless the session only transcribes, answers it through the one turn
(`ConversationService.reply_to`). A reply can also be asked for (`respond`), on the conversation
as it is stored. Each task waits for the one before it and for typed items still being stored. A
cut stops the reply under way; a turn cut before its reply began is still transcribed, stored and
told, and only its reply is called off (told `interrupted`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing

import anyio

from backend.app.audio.types import Audio
from backend.app.core.errors import AppError, ClientGone, InternalError
from backend.app.core.metrics import elapsed_ms
from backend.app.core.values import ToolCall, Transcription
from backend.app.services.conversation import ConversationService
from backend.app.services.realtime.config import ReplyOptions, SessionConfig, SessionError
from backend.app.services.realtime.listener import CutReason, Listener, TimedTranscription
from backend.app.services.realtime.reply import EarlyReply, ReplySender
from backend.app.services.stt import STTService
from backend.app.services.turn_events import Commitment, ReplyEvents, ReplyRequest, Turn

logger = logging.getLogger(__name__)

MAX_TOOL_OUTPUT_CHARS = 8000
"""A function call's output is cut to this before it is stored and read (the empty one is fine)."""
MAX_UNSTORED_ITEMS = 16
"""Typed items waiting to be stored, at most; a faster client waits (its socket unread) instead."""

Speculation = asyncio.Task[TimedTranscription] | None
"""The transcript begun during the trailing silence, if any."""


class Turns:
    """One session's turns and replies: started by the session, told to its listener."""

    def __init__(
        self,
        conversation: ConversationService,
        stt: STTService,
        listener: Listener,
        conversation_id: str = "",
    ) -> None:
        self.conversation = conversation
        self.stt = stt
        self.listener = listener
        self.conversation_id = conversation_id
        self.config = SessionConfig()
        """The session's settings (it replaces them on `configure`)."""
        self.reply = ReplySender(listener)
        self._task: asyncio.Task[None] | None = None  # the turn or response under way (or the last)
        self._task_replies = False
        self._hearing: set[asyncio.Task[None]] = set()
        """Turn tasks not yet replying: until then, a cut withdraws the reply (`_withdrawn`)
        instead of cancelling the task, so that the user's words are kept."""
        self._withdrawn: set[asyncio.Task[None]] = set()
        self._storing: asyncio.Task[None] | None = None  # typed items, stored in order
        self._unstored = 0  # items not yet stored
        self._asked: asyncio.Task[None] | None = None  # a response not yet begun

    @property
    def busy(self) -> bool:
        """A turn is being transcribed or answered."""
        return self._task is not None and not self._task.done()

    @property
    def replying(self) -> bool:
        """A reply is under way (or the turn that will be answered): not yet told finished, so
        a cut can still stop it."""
        return (
            self.busy
            and self._task_replies
            and self.reply.finished_in is not self._task
            and self._task not in self._withdrawn
        )

    # --- what the session starts ------------------------------------------------------------------

    def begin(
        self, utterance: Audio, speculative: Speculation, ended_at: float, early: EarlyReply | None
    ) -> None:
        """A turn ended: transcribe it and (unless the session only transcribes) answer it, after
        the turn still under way (one not cut by speech)."""
        previous = self._task if self.busy else None
        self._task_replies = self.config.respond
        if self.config.respond:
            self._task = asyncio.create_task(
                self._run_turn(utterance, speculative, ended_at, early, previous)
            )
            self._hearing.add(self._task)
        else:
            self._task = asyncio.create_task(self._transcribe_only(utterance, speculative, previous))

    def respond(self, options: ReplyOptions) -> None:
        """A reply to the conversation as stored (the client asks for it)."""
        if self.replying:
            raise SessionError(
                "a response is already in progress; cancel it first",
                "conversation_already_has_active_response",
            )
        previous, self._task_replies = self._task, True
        self._task = self._asked = asyncio.create_task(self._run_response(options, previous))

    async def add_text(self, text: str) -> None:
        """A typed user message: stored in order with the session's other items (not answered
        until the client asks)."""
        text = self.conversation.check_typed(self.conversation_id, text)

        async def store() -> None:
            await self.conversation.add_user_turn(self.conversation_id, text)
            await self.listener.user_text(text)

        await self._in_order(store)

    async def cut_stored_reply(self, heard: str) -> None:
        """The last reply, spoken whole, was heard only as far as `heard` (a truncation after it
        ended): it is stored so, and the next reply's prompt holds exactly that."""
        await self.conversation.history.cut_last_reply(self.conversation_id, heard)

    async def add_tool_result(self, call: ToolCall, output: str) -> None:
        """The result of a call of the client's own tool, stored in order with the typed items
        (the next reply reads it)."""
        self.conversation.history.check_room(self.conversation_id)
        if len(output) > MAX_TOOL_OUTPUT_CHARS:  # the model reads a bounded result, as of MCP tools
            output = output[:MAX_TOOL_OUTPUT_CHARS] + " [cut]"

        async def store() -> None:
            await self.conversation.add_tool_result(self.conversation_id, call, output)

        await self._in_order(store)

    async def _in_order(self, store: Callable[[], Awaitable[None]]) -> None:
        if self._unstored >= MAX_UNSTORED_ITEMS and self._storing is not None:
            await asyncio.wait([self._storing])  # back-pressure: the client's socket waits
        previous = self._storing

        async def stored() -> None:
            try:
                if previous is not None:
                    await asyncio.wait([previous])
                await store()
            finally:
                self._unstored -= 1

        self._unstored += 1
        self._storing = asyncio.create_task(stored())
        self._storing.add_done_callback(retrieve)

    async def cut(self, reason: CutReason) -> bool:
        """Stop the reply under way; False when there is none."""
        if not self.replying:
            return False
        assert self._task is not None
        if self._task in self._hearing:  # its words are still transcribed, stored and told
            self._withdrawn.add(self._task)  # (a cancel would lose them); its reply is called off
            return True
        said = self.reply.cut()
        self._task.cancel()
        await asyncio.wait([self._task])
        if self._asked is self._task:  # cut before it began: it is still answered (begun, then cut)
            self._asked = None
            self.reply.reset()
            await self.reply.start()
        await self.listener.reply_cut(said, reason)
        return True

    async def finish(self) -> None:
        """Wait for the turn under way."""
        if self._task is not None:
            await asyncio.wait([self._task])

    async def close(self) -> None:
        """Cancel the turn under way (its reply is stored as far as it was heard); typed items
        already sent are stored."""
        tasks = [t for t in (self._task, self._storing) if t is not None]
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # --- the turn tasks ---------------------------------------------------------------------------

    async def transcribe(self, utterance: Audio) -> TimedTranscription:
        """The transcription and the milliseconds it took (queue wait included)."""
        began = time.perf_counter()
        transcription = await self.stt.transcribe_audio(utterance, self.config.options)
        return transcription, elapsed_ms(began)

    async def early_reply(self, early: EarlyReply) -> None:
        """Begin the reply on the transcript so far; its events wait in `early.events`."""
        try:
            transcription, stt_ms = await early.transcription
            if not transcription.text:
                return
            events = await self._open_reply(
                transcription.text, transcription.language, stt_ms, time.perf_counter(), early.commitment
            )
            async with aclosing(events) as stream:
                async for event in stream:
                    await early.events.put(event)
        except Exception as e:  # handed to the turn, which answers without it
            await early.events.put(e)
        finally:
            early.events.put_nowait(None)

    async def _transcribed(self, utterance: Audio, speculative: Speculation) -> TimedTranscription:
        if speculative is not None:
            try:
                return await speculative
            except AppError:
                pass  # e.g. the STT queue was full then; try once more now
        return await self.transcribe(utterance)

    async def _open_reply(
        self,
        text: str | None,
        language: str | None,
        stt_ms: float | None,
        started: float,
        commitment: Commitment | None = None,
        options: ReplyOptions | None = None,
        asked: float | None = None,
    ) -> ReplyEvents:
        """The reply to `text` (None: to the stored conversation), admitted now (503 when the
        models are full); `started` is when the user finished speaking."""
        options = options or self.config.reply
        request = ReplyRequest(
            self.conversation_id,
            language,
            options.voice,
            options.speak,
            options.instructions,
            options.max_tokens,
            self.config.usage,
            asked=asked if asked is not None else time.time(),
            started=started,
            timings={"stt_ms": stt_ms} if stt_ms is not None else {},
            played=self.reply.played_s,
            commitment=commitment,
            tools=options.tools,
        )
        return await self.conversation.reply_to(text, request)

    async def _transcribe_only(
        self, utterance: Audio, speculative: Speculation, previous: asyncio.Task[None] | None
    ) -> None:
        """A turn that is not answered: transcribed, stored, told — in order with the others."""
        try:
            transcription, stt_ms = await self._transcribed(utterance, speculative)
        except AppError as e:
            if previous is not None:
                await asyncio.wait([previous])
            await self.listener.transcription_failed(e)
            return
        if previous is not None:
            await asyncio.wait([previous])
        await self._store_transcript(transcription, stt_ms)

    async def _run_turn(
        self,
        utterance: Audio,
        speculative: Speculation,
        ended_at: float,
        early: EarlyReply | None,
        previous: asyncio.Task[None] | None,
    ) -> None:
        asked = time.time()
        task = asyncio.current_task()
        assert task is not None
        try:
            try:
                # stt_ms is the transcription's own time, even when it ran during the trailing
                # silence and was ready before the turn began (then it adds nothing to total_ms).
                transcript = await self._transcribed(utterance, speculative)
            except AppError as e:
                await self.listener.transcription_failed(e)
                return
            waiting = [t for t in (previous, self._storing) if t is not None]
            if waiting:
                await asyncio.wait(waiting)
            self._hearing.discard(task)  # from here on, a cut cancels
            if task in self._withdrawn:
                await self._keep_unanswered(transcript)
                return
            self.reply.reset()
            transcription, stt_ms = transcript
            if not transcription.text:
                await self.listener.transcribed(transcription, stt_ms)
                timings = {"stt_ms": stt_ms, "total_ms": elapsed_ms(ended_at)}
                self.reply.finished_in = task  # nothing to answer, nor to cut
                await self.listener.reply_finished(Turn("", "", self.conversation_id, None, timings))
                return
            if early is not None and await self.reply.take_over(early, transcript, ended_at):
                return
            events = await self._open_reply(
                transcription.text, transcription.language, stt_ms, ended_at, asked=asked
            )
            async with aclosing(events) as stream:
                async for event in stream:
                    await self.reply.send(event, transcript)
        except AppError as e:
            # The turn fails (a busy model, an over-long text); the session goes on.
            await self.listener.reply_failed(e)
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
        await self.listener.transcribed(transcription, stt_ms)

    async def _keep_unanswered(self, transcript: TimedTranscription) -> None:
        """A turn cut before its reply began: the user's words are stored and told all the same,
        then the turn is told finished, unanswered (`interrupted`, with nothing said)."""
        transcription, stt_ms = transcript
        await self._store_transcript(transcription, stt_ms)
        turn = Turn(transcription.text, "", self.conversation_id, None, {"stt_ms": stt_ms}, interrupted=True)
        await self.listener.reply_finished(turn)

    async def _run_response(self, options: ReplyOptions, previous: asyncio.Task[None] | None) -> None:
        """A reply the client asked for, on the conversation as stored."""
        try:
            # Typed items and turns still being transcribed come first.
            waiting = [t for t in (previous, self._storing) if t is not None]
            if waiting:
                await asyncio.wait(waiting)
            if self._asked is asyncio.current_task():
                self._asked = None  # it begins: a cut from now on is an ordinary one
            self.reply.reset()
            await self.reply.start()
            events = await self._open_reply(None, None, None, time.perf_counter(), options=options)
            async with aclosing(events) as stream:
                async for event in stream:
                    await self.reply.send(event)
        except AppError as e:
            await self.listener.reply_failed(e)
        except ClientGone:
            pass
        except Exception:
            logger.exception("realtime response failed in conversation %s", self.conversation_id)
            await self._tell_failed()

    async def _tell_failed(self) -> None:
        """The client hears that its reply failed (unless it is gone)."""
        try:
            await self.listener.reply_failed(
                InternalError("the reply failed on the server; the conversation goes on")
            )
        except Exception:  # the client is gone, or cannot be told: the transport ends the session
            logger.debug("could not report a failed reply", exc_info=True)


def retrieve(task: asyncio.Task[object]) -> None:
    """Mark a discarded task's failure as seen (it is retried, irrelevant, or was logged)."""
    if not task.cancelled() and task.exception() is not None:
        logger.debug("a realtime side task failed: %r", task.exception())
