"""One spoken turn: transcribe the user's audio, reply, speak the reply and keep it for download.

A turn is: transcribe -> store the user's turn -> the chat's reply stream -> `tts.speak_stream`
(which speaks each complete piece while the LLM goes on generating, so the first audio is ready
long before the reply is) -> store the reply and its audio. The non-streamed turn is the streamed
one collected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

import anyio

from backend.app.audio.encode import AudioFormat
from backend.app.core.admission import TYPICAL_REPLY_S, TYPICAL_TURN_S, Gate
from backend.app.core.metrics import ServiceMetrics, elapsed_ms
from backend.app.core.values import ChatMessage, ToolCall, TranscribeOptions
from backend.app.services.chat import ChatService
from backend.app.services.history import ConversationHistory, check_conversation_id
from backend.app.services.mcp_tools import ToolStep
from backend.app.services.speech import ReplyAudio, SpeechStream
from backend.app.services.stt import STTService
from backend.app.services.tts import TTSService
from backend.app.services.turn_events import (
    Heard,
    ReplyEvents,
    ReplyRequest,
    Turn,
    TurnEvent,
    TurnSlot,
    TurnStream,
    Unspoken,
    Usage,
    heard_reply,
)
from backend.app.storage.rows import Turn as StoredTurn
from backend.app.voices.library import VoiceInfo

logger = logging.getLogger(__name__)


class ConversationService:
    """STT -> chat -> TTS, calling the three services directly."""

    def __init__(
        self,
        stt: STTService,
        chat: ChatService,
        tts: TTSService,
        history: ConversationHistory,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.stt = stt
        self.chat = chat
        self.tts = tts
        self.history = history
        self.metrics = metrics or ServiceMetrics()
        self.turns = Gate("spoken turns", chat.capacity)
        """Turns in progress, from admission to the stored reply: as many as the LLM admits."""

    def check_ready(
        self,
        voice: str | None,
        conversation_id: str | None = None,
        with_audio: bool = True,
        audio_s: float | None = TYPICAL_TURN_S,
    ) -> TurnSlot:
        """Fail fast, before any work: an unknown voice (404), a full disk (507: the turn and its
        audio are stored), too many turns in progress or on this conversation (503). A turn is
        admitted as a whole at the turn gate (as many as the LLM admits requests), within the
        `turn` budget (ADMISSION_BUDGETS) on the stages it still needs (`audio_s` of speech to
        transcribe, None: transcribed already; a reply; its speech unless `with_audio` is False),
        and holds its places: the LLM slot now (`ReplyRequest.slot`), its transcription and TTS
        pieces as follow-ups, so single-stage requests filling one queue cannot starve it."""
        if voice:
            self.tts.choose_voice(voice, None)
        self.history.require_room(with_audio=with_audio)
        if conversation_id:
            self.history.check_room(conversation_id)
        stages = [(self.chat.worker, 1.0)]
        if audio_s is not None:
            stages.insert(0, (self.stt.worker, audio_s))
        if with_audio:
            stages.append((self.tts.worker, TYPICAL_REPLY_S))
        ticket = self.turns.enter(stages, reserve=("stt",), keep=("tts",))
        return TurnSlot(ticket, self.chat.reserve())

    @property
    def output_sample_rate(self) -> int:
        """The rate of the reply audio the TTS engine speaks."""
        return self.tts.backend.sample_rate

    async def keep_system_prompt(self, conversation_id: str, prompt: str) -> None:
        """`prompt` becomes the conversation's own system prompt (a realtime session's
        instructions): its later replies, over any transport, follow it."""
        await self.history.update(conversation_id, system_prompt=prompt)

    def check_voice(self, voice: str | None) -> None:
        """A voice a reply may be spoken in (404 when unknown), checked before any work."""
        if voice:
            self.tts.choose_voice(voice, None)

    def check_typed(self, conversation_id: str, text: str) -> str:
        """A typed user message, checked (length) and given room in its conversation; trimmed."""
        text = self.chat.check_text(text)
        self.history.check_room(conversation_id)
        return text

    async def check_typed_reply(self, conversation_id: str, text: str) -> str:
        """A typed message about to be answered, checked as the chat route checks it: its length,
        the disk, the conversation's queue, and the context (413 when it does not fit, rather than
        cut as a long transcript is); trimmed."""
        text, _ = await self.chat.check_reply(text, conversation_id)
        return text

    async def begin_turn(
        self,
        audio: bytes,
        conversation_id: str | None = None,
        voice: str | None = None,
        options: TranscribeOptions | None = None,
        audio_format: AudioFormat = "wav",
    ) -> TurnStream:
        """Validate and transcribe now (so errors come before any streaming); the reply follows in
        the returned stream's `events`. Silence gives an empty transcript and no reply."""
        cid = check_conversation_id(conversation_id) if conversation_id else None
        slot = self.check_ready(voice, cid)
        try:
            started = time.perf_counter()
            asked = time.time()
            transcription = await self.stt.transcribe(audio, options or TranscribeOptions(), reserved=True)
        except BaseException:
            slot.release()
            raise
        timings = {"stt_ms": elapsed_ms(started)}
        if not transcription.text:
            slot.release()
            return TurnStream(transcription, cid, _nothing_to_say(cid, timings, started))
        request = ReplyRequest(
            cid or check_conversation_id(None),
            transcription.language,
            voice,
            audio_format=audio_format,
            asked=asked,
            started=started,
            timings=timings,
            slot=slot,
        )
        events = await self.reply_to(transcription.text, request)
        return TurnStream(transcription, request.conversation_id, events)

    async def turn(
        self,
        audio: bytes,
        conversation_id: str | None = None,
        voice: str | None = None,
        options: TranscribeOptions | None = None,
        audio_format: AudioFormat = "wav",
    ) -> Turn:
        """Run one turn and store it: the streamed turn, collected."""
        return await collect(await self.begin_turn(audio, conversation_id, voice, options, audio_format))

    async def add_user_turn(
        self, conversation_id: str, text: str, language: str | None = None, stt_ms: float | None = None
    ) -> None:
        """Store what the user said or typed, with no reply (yet): a realtime client answers
        when it asks, or never (dictation). In order with the conversation's other requests."""
        turn = StoredTurn(
            "user",
            text,
            created_at=time.time(),
            language=language,
            timings={"stt_ms": stt_ms} if stt_ms is not None else {},
        )
        async with self.history.serialised(conversation_id):
            await self.history.add_turns(conversation_id, turn)

    async def add_tool_result(self, conversation_id: str, call: ToolCall, output: str) -> None:
        """Store the result of a call of the client's own tool (an OpenAI Realtime function
        call): an assistant turn of that call and its result, which the next reply reads."""
        step = {"id": call.id, "name": call.name, "arguments": call.arguments, "result": output}
        turn = StoredTurn("assistant", "", created_at=time.time(), tools=({**step, "server": "client"},))
        async with self.history.serialised(conversation_id):
            await self.history.add_turns(conversation_id, turn)

    async def reply_to(self, words: str | None, request: ReplyRequest) -> ReplyEvents:
        """The one turn every transport takes: the user's `words` (a transcript, or a text
        Wyoming's agent was handed) fitted to the context, the places taken at the turn gate
        (unless `request.slot` holds them: 503 now, before anything is sent), then the reply as
        a stream: `Heard` once the user's turn is stored, then `ReplyText` deltas and `ReplyAudio`
        pieces as they are ready, then the `Turn`. With `words` None, the reply is to the
        conversation as it is stored (its user turns are there already): no user turn is stored
        and no `Heard` comes.

        Closing the stream early (barge-in, a client gone) cancels the LLM and TTS work and stores
        the reply as far as the listener heard it (`request.played`; by default every piece handed
        out), marked interrupted.

        With `request.commitment`, the reply is pre-emptive: it is generated and spoken as usual,
        but nothing is stored until the commitment is confirmed (the user has really finished; the
        timings then count from that moment), and no `Heard` comes (the caller knows when it
        confirmed). Closed before that, it leaves no trace; finished before that, it waits for it.
        """
        slot = request.slot
        try:
            if words is not None:
                words = await asyncio.to_thread(self.chat.fit_spoken, words, request.language)
            if slot is None:
                slot = request.slot = self.check_ready(None, request.conversation_id, request.speak, None)
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        return ReplyEvents(self._reply(words, request, slot), slot)

    async def _reply(
        self, text: str | None, request: ReplyRequest, slot: TurnSlot
    ) -> AsyncGenerator[TurnEvent, None]:
        conversation_id, language, timings = request.conversation_id, request.language, request.timings
        commitment, voice, speak = request.commitment, request.voice, request.speak
        try:
            async with self.history.serialised(conversation_id):
                # The context is read before the user's turn is stored, so it is there once.
                messages = await asyncio.to_thread(
                    self.chat.build_messages, conversation_id, text, request.system_prompt, language
                )
                user = StoredTurn(
                    "user",
                    text or "",
                    created_at=request.asked,
                    language=language,
                    timings={"stt_ms": timings.get("stt_ms", 0.0)},
                )
                if commitment is None and text is not None:
                    # The user's words are kept whatever becomes of the reply.
                    await self.history.add_turns(conversation_id, user)
                    yield Heard(text)
                if not voice and speak:
                    voice = await asyncio.to_thread(self._reply_voice, conversation_id, language)
                parts: list[str] = []
                steps: list[ToolStep] = []
                calls: list[ToolCall] = []  # of the client's own tools: the reply ends with them
                generated = self.chat.generate(
                    conversation_id,
                    text or "",
                    slot.llm,
                    messages,
                    request.max_tokens,
                    steps,
                    request.tools,
                    calls,
                    commitment,  # a pre-emptive reply runs no tool before the turn is confirmed
                )
                deltas = _timed(generated, timings, parts)
                speech: SpeechStream | Unspoken
                speech = await self.tts.speak_stream(deltas, voice) if speak else Unspoken(deltas)
                spoken: list[ReplyAudio] = []
                first_audio_at = 0.0
                finished = False
                heard: asyncio.Task[None] | None = None
                if commitment is not None:  # stored once confirmed, unless closed before that
                    heard = asyncio.create_task(commitment.then_store(self.history, conversation_id, user))
                try:
                    async with aclosing(speech) as events:
                        async for event in events:
                            if isinstance(event, ReplyAudio):
                                if not spoken:
                                    timings["tts_first_audio_ms"] = round((speech.first_s or 0) * 1000, 1)
                                    first_audio_at = time.perf_counter()
                                spoken.append(event)
                            yield event
                    timings["tts_ms"] = round(speech.busy_s * 1000, 1)
                    if heard is not None:
                        await heard  # a reply complete before the user surely finished waits here
                    finished = True
                finally:
                    with anyio.CancelScope(shield=True):
                        if heard is not None and not heard.done():
                            if not commitment or not commitment.confirmed:
                                heard.cancel()  # never confirmed: nothing was or will be stored
                            await asyncio.wait([heard])
                        if heard is None or (not heard.cancelled() and heard.exception() is None):
                            origin = commitment.at if commitment and commitment.at else request.started
                            reply, name = await self._store_reply(
                                conversation_id,
                                timings,
                                parts,
                                spoken,
                                speech.voice,
                                finished,
                                None if finished or request.played is None else request.played(),
                                origin,
                                first_audio_at,
                                request.audio_format,
                                text_only=not speak,
                                steps=steps,
                            )
            counted = await asyncio.to_thread(self._usage, messages, reply) if request.usage else None
            stored = tuple(step.stored() for step in steps)
            yield Turn(
                text or "",
                reply,
                conversation_id,
                name,
                dict(timings),
                not finished,
                counted,
                tuple(calls),
                stored,
            )
        finally:
            slot.release()  # the LLM slot is unused if the reply never reached the LLM

    def _reply_voice(self, conversation_id: str, language: str | None) -> str | None:
        """The conversation's voice, else one of the language the user spoke (blocking)."""
        return self.history.reply_voice(conversation_id) or self.tts.voice_for_language(language)

    def _usage(self, messages: list[ChatMessage], reply: str) -> Usage:
        output = self.chat.count_text_tokens(reply) if reply else 0
        return Usage(self.chat.count_tokens(messages), output)

    async def _store_reply(
        self,
        conversation_id: str,
        timings: dict[str, float],
        parts: list[str],
        spoken: list[ReplyAudio],
        voice: VoiceInfo | None,
        finished: bool,
        played_s: float | None,
        origin: float,
        first_audio_at: float,
        audio_format: AudioFormat,
        *,
        text_only: bool = False,
        steps: Sequence[ToolStep] = (),
    ) -> tuple[str, str | None]:
        """Store the reply as far as it was heard (a reply in text only: as far as it was
        delivered), with its timings counted from `origin` (the end of the user's speech); returns
        the reply's text and its audio's name."""
        heard = heard_reply(spoken, played_s)
        whole = finished or text_only
        reply = "".join(parts).strip() if whole else heard.text
        timings.setdefault("tts_first_audio_ms", 0.0)
        if first_audio_at:
            timings["first_audio_ms"] = round(max(0.0, first_audio_at - origin) * 1000, 1)
            self.metrics.observe_stage("first_audio", timings["first_audio_ms"] / 1000)
        timings.setdefault("first_audio_ms", 0.0)
        timings["total_ms"] = elapsed_ms(origin)
        name = await self.history.save_audio(heard.audio, audio_format)
        await self.history.add_turns(
            conversation_id,
            StoredTurn(
                "assistant",
                reply,
                voice=voice.file if voice else None,
                audio_file=name,
                timings=dict(timings),
                interrupted=not finished,
                tools=tuple(step.stored() for step in steps),
            ),
        )
        return reply, name


async def _timed(
    deltas: AsyncGenerator[str, None], timings: dict[str, float], parts: list[str]
) -> AsyncGenerator[str, None]:
    """The LLM's deltas, noting the reply's text and its llm_first_token_ms and llm_ms."""
    began = time.perf_counter()
    async with aclosing(deltas):
        async for delta in deltas:
            timings.setdefault("llm_first_token_ms", elapsed_ms(began))
            parts.append(delta)
            yield delta
    timings["llm_ms"] = elapsed_ms(began)
    timings.setdefault("llm_first_token_ms", timings["llm_ms"])


async def collect(stream: TurnStream) -> Turn:
    """Run a streamed turn to its end; its last event is the Turn."""
    async with aclosing(stream.events) as events:
        async for event in events:
            if isinstance(event, Turn):
                return event
    raise AssertionError("a turn's events end with the Turn")


async def _nothing_to_say(
    conversation_id: str | None, timings: dict[str, float], started: float
) -> AsyncGenerator[TurnEvent, None]:
    """The events of a silent turn: no reply, nothing stored."""
    timings.update(llm_first_token_ms=0.0, llm_ms=0.0, tts_first_audio_ms=0.0, tts_ms=0.0)
    timings.update(first_audio_ms=0.0, total_ms=elapsed_ms(started))
    yield Turn("", "", conversation_id, None, dict(timings))
