"""One Wyoming client connection: its events read with bounds, each request served on the shared
services (the same workers, queues and limits as HTTP), every failure answered with an `error`
event (or `not-handled`) instead of an exception.

A request runs while the connection goes on reading: when the client vanishes mid-request, the
request is cancelled and its model slot freed at once. A connection idle for WYOMING_IDLE_TIMEOUT_S
with nothing of its own under way is closed; so is one that breaks the protocol, after an `error`
event that says how.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart
from wyoming.event import Event
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop, NotHandled
from wyoming.info import SelectProgram
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart

from backend.app.api.protocols.dispatch import Dispatch
from backend.app.api.protocols.errors import ProtocolError
from backend.app.api.protocols.wyoming import access, info, speech
from backend.app.api.protocols.wyoming.protocol import (
    KNOWN_TYPES,
    EventWriter,
    check_str,
    check_strings,
    check_voice,
    close,
    error_event,
    parse,
    read_line,
    read_rest,
)
from backend.app.audio.pcm import AudioBudget, PcmCollector, check_format
from backend.app.container import ServiceGate, Services
from backend.app.core.config import Settings
from backend.app.core.errors import AppError, ClientGone, InvalidInputError
from backend.app.core.values import TranscribeOptions
from backend.app.services.speech import ReplyText
from backend.app.services.turn_events import ReplyRequest, Turn

logger = logging.getLogger(__name__)

T = TypeVar("T")
_END = None
MAX_BIAS_CHARS = 2000
"""Most characters of Home Assistant's names and terms passed to Whisper as hotwords."""

EVENTS: Dispatch[Connection, Event] = Dispatch()
"""The client's events this server serves, by type."""


class Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        gate: ServiceGate,
        settings: Settings,
        observe: Callable[[str, str], None],
        budget: AudioBudget | None = None,
        own_conversations: bool = False,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._gate = gate
        self._settings = settings.wyoming
        self._app_settings = settings
        self._observe = observe
        self._out = EventWriter(writer, self._settings.idle_timeout_s)
        self._inbox: asyncio.Queue[Event | ProtocolError | None] = asyncio.Queue(maxsize=8)
        self._gone = asyncio.Event()
        self._busy = 0
        self._options = TranscribeOptions()
        self._audio: PcmCollector | None = None
        self._held = 0  # bytes of `_audio` charged to the budget
        self._discarding = False  # the rest of a refused audio stream is being dropped
        self._budget = budget or AudioBudget(int(self._settings.max_buffered_mb * 1024 * 1024))
        self._own_conversations = own_conversations
        self._text: speech.TextStream | None = None
        self._last_request = time.monotonic()

    async def write(self, event: Event) -> None:
        await self._out.write(event)

    async def run(self) -> None:
        """Serve the connection until it ends; nothing escapes."""
        reading = asyncio.create_task(self._read_loop(), name="wyoming-read")
        refused = False
        try:
            while (item := await self._inbox.get()) is not _END:
                if isinstance(item, ProtocolError):
                    await self._inbox_error(item)
                    refused = True
                    break
                if not await self._dispatch(item):
                    refused = True
                    break
        except ClientGone:
            pass
        except Exception:
            logger.exception("wyoming connection failed")
            with contextlib.suppress(Exception):
                await self.write(error_event(ProtocolError("internal error", code="internal_error")))
        finally:
            reading.cancel()
            self._drop_audio()
            if self._text is not None:
                await self._text.aclose()
            await asyncio.gather(reading, return_exceptions=True)
            await close(self._reader, self._writer, linger=refused)

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Read events into the inbox; the end of the stream (or a broken event) is its last item,
        whatever happens here, so that the connection ends and its slot is given back."""
        item: Event | ProtocolError | None = None
        try:
            while True:
                line = await self._next_line()
                if line is None:
                    break
                event = await read_rest(
                    self._reader, line, self._settings.max_event_bytes, self._settings.idle_timeout_s
                )
                if event.type != "ping":  # a ping keeps nothing alive: it is no request
                    self._last_request = time.monotonic()
                await self._inbox.put(event)
        except ProtocolError as e:
            item = e
        except ClientGone:
            pass
        except Exception:  # a fault of ours must not leave the connection open and unanswered
            logger.exception("reading a Wyoming event failed")
            item = ProtocolError("internal error", code="internal_error")
        self._gone.set()
        await self._inbox.put(item)

    async def _next_line(self) -> bytes | None:
        """The next header line. A connection with no request for WYOMING_IDLE_TIMEOUT_S (pings do
        not count) and none under way ends (one under way may take longer: the client waits for it);
        a header trickled in slowly must be whole within that time too."""
        idle = self._settings.idle_timeout_s
        while True:
            remaining = self._active_at() + idle - time.monotonic()
            try:
                async with asyncio.timeout(max(remaining, 0.05)):
                    return await read_line(self._reader)
            except TimeoutError:
                if self._busy:
                    self._last_request = time.monotonic()  # wait again, from now
                elif time.monotonic() - self._active_at() >= idle:
                    raise ProtocolError(
                        f"closed after {idle:g} s without a request", code="idle_timeout"
                    ) from None

    def _active_at(self) -> float:
        """The connection's last sign of life: its last request, or, while a streamed synthesis
        is open, the last audio it was sent (a stream waiting for text that never comes is idle)."""
        if self._text is None:
            return self._last_request
        return max(self._last_request, self._out.last_write)

    async def _job(self, work: Awaitable[T]) -> T:
        """Run `work` until it ends or the client goes, whichever is first (then it is cancelled,
        which stops its inference and frees its model slot)."""
        task = asyncio.ensure_future(work)
        gone = asyncio.create_task(self._gone.wait())
        self._busy += 1
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise ClientGone
        finally:
            self._busy -= 1
            self._last_request = time.monotonic()  # the idle time counts from the request's end
            gone.cancel()
            if not task.done():
                task.cancel()

    # -- dispatch --------------------------------------------------------------------------

    async def _dispatch(self, event: Event) -> bool:
        """Serve one event; False ends the connection. An `AppError` answers the request that
        raised it with an `error` event and resets that request; the connection goes on."""
        kind = event.type
        handler = EVENTS.find(kind)
        if handler is None:
            if kind not in KNOWN_TYPES:
                await self._inbox_error(ProtocolError(f"unknown event type {kind!r}"))
                return False
            logger.debug("dropped a Wyoming %r event (not served here)", kind)
            return True
        started = time.perf_counter()
        try:
            await handler(self, event)
        except ProtocolError as e:
            self._reset()
            await self._inbox_error(e)
            return False
        except AppError as e:
            self._reset()
            self._observe(kind, e.code)
            await self.write(error_event(e))
            return True
        self._observe(kind, "ok")
        logger.debug("wyoming %s served in %.0f ms", kind, (time.perf_counter() - started) * 1000)
        return True

    async def _inbox_error(self, error: ProtocolError) -> None:
        self._observe("protocol", error.code)
        await self.write(error_event(error))

    def _reset(self) -> None:
        # The rest of a refused audio stream is dropped quietly: the client has had its error.
        self._discarding = self._audio is not None
        self._drop_audio()
        if self._text is not None:
            self._text.failed = True

    @EVENTS.on("describe")
    async def _describe(self, event: Event) -> None:
        services = self._gate.require()
        described = await asyncio.to_thread(info.describe, services, self._app_settings)
        await self.write(described.event())

    @EVENTS.on("ping")
    async def _ping(self, event: Event) -> None:
        text = parse(Ping, event).text
        await self.write(Pong(text=text if isinstance(text, str) else None).event())

    @EVENTS.on("select-program")
    async def _select(self, event: Event) -> None:
        name = parse(SelectProgram, event).name
        if name not in (info.ASR_PROGRAM, info.TTS_PROGRAM, info.HANDLE_PROGRAM):
            raise ProtocolError(f"no program {name!r} here; describe lists them")

    # -- speech to text --------------------------------------------------------------------

    @EVENTS.on("transcribe")
    async def _transcribe(self, event: Event) -> None:
        request = parse(Transcribe, event)
        check_str(request.language, "transcribe")
        names = check_strings(request.transcript_names, "transcribe", "transcript_names")
        terms = check_strings(request.transcript_terms, "transcribe", "transcript_terms")
        services = self._gate.require()
        bias = [*names, *terms]
        hotwords = ", ".join(str(word) for word in bias)[:MAX_BIAS_CHARS] or None
        options = TranscribeOptions(language=speech.primary_language(request.language), hotwords=hotwords)
        services.stt.check_options(options)
        self._options = options

    @EVENTS.on("audio-start")
    async def _audio_start(self, event: Event) -> None:
        start = parse(AudioStart, event)
        services = self._gate.require()
        self._drop_audio()
        self._discarding = False
        check_format(start.rate, start.width, start.channels)  # 422 now, not at the first chunk
        stt = services.stt
        self._audio = PcmCollector(stt.sample_rate, stt.max_audio_s)

    @EVENTS.on("audio-chunk")
    async def _audio_chunk(self, event: Event) -> None:
        if self._audio is None and self._discarding:
            return
        if self._audio is None:
            raise ProtocolError("audio-chunk before audio-start")
        chunk = parse(AudioChunk, event)
        if not isinstance(chunk.audio, bytes):
            raise ProtocolError("an audio-chunk needs its audio as the payload")
        # Charged before it is held, in what it will cost held (not in what the client declares).
        cost = self._audio.cost(len(chunk.audio), chunk.rate, chunk.width, chunk.channels)
        self._budget.take(cost)
        self._held += cost
        self._audio.add(chunk.audio, chunk.rate, chunk.width, chunk.channels)

    @EVENTS.on("audio-stop")
    async def _audio_stop(self, event: Event) -> None:
        if self._audio is None and self._discarding:
            self._discarding = False
            return
        if self._audio is None:
            raise ProtocolError("audio-stop before audio-start")
        audio = self._audio.finish()
        self._drop_audio()
        options, self._options = self._options, TranscribeOptions()
        services = self._gate.require()
        await self._job(speech.send_transcript(self._out, services.stt, audio, options))

    def _drop_audio(self) -> None:  # and give its bytes back to the budget
        self._audio = None
        self._budget.give(self._held)
        self._held = 0

    # -- text to speech --------------------------------------------------------------------

    @EVENTS.on("synthesize")
    async def _synthesize(self, event: Event) -> None:
        if self._text is not None:
            return  # the copy a streaming client also sends, for servers that do not stream
        request = parse(Synthesize, event)
        check_str(request.text, "synthesize", required=True)
        check_voice(request.voice)
        services = self._gate.require()
        await self._job(speech.synthesize(services.tts, self._out, request.text, request.voice))

    @EVENTS.on("synthesize-start")
    async def _synthesize_start(self, event: Event) -> None:
        request = parse(SynthesizeStart, event)
        check_voice(request.voice)
        services = self._gate.require()
        if self._text is not None:
            raise ProtocolError("synthesize-start while a stream is open")
        stream = speech.TextStream(services.tts, self._out, request.voice)
        await stream.start()
        self._text = stream

    @EVENTS.on("synthesize-chunk")
    async def _synthesize_chunk(self, event: Event) -> None:
        if self._text is None:
            raise ProtocolError("synthesize-chunk before synthesize-start")
        text = parse(SynthesizeChunk, event).text
        check_str(text, "synthesize-chunk", required=True)
        self._text.push(text)

    @EVENTS.on("synthesize-stop")
    async def _synthesize_stop(self, event: Event) -> None:
        if self._text is None:
            raise ProtocolError("synthesize-stop before synthesize-start")
        stream, self._text = self._text, None
        stream.end()
        if stream.failed:  # the client has had its error event
            await stream.aclose()
            return
        try:
            if stream.task is not None:
                await self._job(asyncio.shield(stream.task))
        finally:
            await stream.aclose()

    # -- conversation agent ----------------------------------------------------------------

    @EVENTS.on("transcript", "handle")
    async def _handle(self, event: Event) -> None:
        """The LLM's reply to a text (`transcript`, as Home Assistant sends it), in the conversation
        its context names (`conversation_id`; a new one otherwise, returned in the context):
        `handled-start`, a `handled-chunk` per piece as it is written, `handled`, `handled-stop`;
        `not-handled` with the reason when it cannot be answered."""
        text = event.data.get("text")
        context = event.data.get("context")
        given = (context if isinstance(context, dict) else {}).get("conversation_id") or event.data.get(
            "conversation_id"
        )
        conversation_id = access.conversation_id(given, self._own_conversations)
        reply_context = {**(context if isinstance(context, dict) else {}), "conversation_id": conversation_id}
        try:
            if not isinstance(text, str):
                raise InvalidInputError("the text to handle must be a string")
            services = self._gate.require()
            await self._job(self._reply(services, text, conversation_id, reply_context))
        except AppError as e:
            self._observe(event.type, e.code)
            await self.write(NotHandled(text=e.message, context=reply_context).event())

    async def _reply(
        self, services: Services, text: str, conversation_id: str, context: dict[str, Any]
    ) -> None:
        """The one turn, in text only: what Home Assistant hands the agent is what its STT heard."""
        conversation = services.conversation
        words = await conversation.check_typed_reply(conversation_id, text)
        events = await conversation.reply_to(words, ReplyRequest(conversation_id, speak=False))
        try:
            await self.write(HandledStart(context=context).event())
            async for item in events:
                if isinstance(item, ReplyText) and item.text:
                    await self.write(HandledChunk(text=item.text).event())
                elif isinstance(item, Turn):
                    await self.write(Handled(text=item.reply, context=context).event())
            await self.write(HandledStop().event())
        finally:
            await events.aclose()
