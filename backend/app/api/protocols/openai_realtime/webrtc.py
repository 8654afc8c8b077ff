"""OpenAI's Realtime API over WebRTC: `POST /v1/realtime/calls` takes the browser's SDP offer (raw
`application/sdp`, or OpenAI's multipart form with `sdp` and `session`) and answers with ours;
`?conversation_id=` continues a stored conversation (as on the WebSocket);
`POST /v1/realtime/calls/{call_id}/hangup` ends a call.

A call is the same realtime session as /v1/realtime's WebSocket, with the same client and server
events, carried on the `oai-events` data channel. Audio travels as Opus over RTP both ways (no
`input_audio_buffer.append` needed, no `response.output_audio.delta` sent): the reply plays on a
track of ours at real time, with `output_audio_buffer.started`/`stopped`/`cleared`, and
`output_audio_buffer.clear` or the caller's speech cuts it at once. ICE uses the host's own
addresses (enough on a LAN) and WEBRTC_ICE_SERVERS when set. A call whose peer never connects is
closed after CONNECT_TIMEOUT_S; every call ends at WS_MAX_SESSION_S, and counts among
WS_MAX_SESSIONS (and the key's realtime_sessions)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from backend.app.api.protocols.calls import Calls
from backend.app.api.protocols.openai_realtime.events import ServerEvents
from backend.app.api.protocols.openai_realtime.schema import (
    ResponseState,
    SessionFields,
    new_id,
    validation_problem,
)
from backend.app.api.protocols.openai_realtime.session import OpenAIRealtime
from backend.app.api.protocols.webrtc_audio import FRAME_SAMPLES, TRACK_RATE, Feed, ReplyTrack, listen
from backend.app.api.protocols.wire_audio import WireEncoder, WireFormat
from backend.app.api.v1.compat import VoiceMap
from backend.app.container import Services
from backend.app.core.config import Settings
from backend.app.core.errors import InvalidInputError, NotFoundError, QuotaError, UnsupportedMediaTypeError
from backend.app.core.quotas import current_account
from backend.app.services.history import check_conversation_id
from backend.app.services.realtime.listener import CutReason
from backend.app.services.speech import ReplyAudio
from backend.app.services.turn_events import Turn

logger = logging.getLogger(__name__)

router = APIRouter(tags=["openai"])

CONNECT_TIMEOUT_S = 20.0
"""A call whose peer has not connected (ICE and DTLS) this long after the answer is closed."""

MAX_SDP_BYTES = 64 * 1024
EVENTS_CHANNEL = "oai-events"
TRACK_FORMAT = WireFormat("audio/pcm", TRACK_RATE)
MAX_QUEUED_EVENTS = 256
"""Client events waiting to be handled; more are answered with an error and dropped."""


class WebRtcEvents(ServerEvents):
    """A call's server events: the reply's audio goes to the call's track (Opus, 48 kHz), not
    into events; the session's audio format is moot on the wire and shown as set."""

    track: ReplyTrack
    _encoder: tuple[str, WireEncoder] | None = None

    def playing(self, kind: str, response_id: str) -> None:
        """The track began or finished playing a response: say so (from the track's loop)."""
        asyncio.get_running_loop().create_task(self.event(kind, response_id=response_id))

    async def reply_audio(self, piece: ReplyAudio, first: bool) -> None:
        response = self.response
        if response is None:
            return
        if self._encoder is None or self._encoder[0] != response.id:
            self._encoder = (response.id, WireEncoder(TRACK_FORMAT))
        await self._play(response, self._encoder[1].encode(piece.audio.samples, piece.audio.sample_rate))

    async def send_audio(self, response: ResponseState, data: bytes) -> None:
        pass  # no output_audio deltas over WebRTC: the audio is on the track

    async def _play(self, response: ResponseState, data: bytes) -> None:
        step = FRAME_SAMPLES * 2 * 5  # 100 ms
        for offset in range(0, len(data), step):
            chunk = data[offset : offset + step]
            await self.track.room()  # sent at the pace it is heard: the reply can still be cut
            self.track.push(response.id, chunk)
            response.audio_s += TRACK_FORMAT.seconds(len(chunk))
            if self.session is not None:
                self.session.limit_heard(self.track.played_s)

    async def reply_finished(self, turn: Turn) -> None:
        response = self.response
        if response is not None and self._encoder is not None and self._encoder[0] == response.id:
            await self._play(response, self._encoder[1].flush())
        await super().reply_finished(turn)
        if response is not None:
            self.track.finish(response.id)

    async def reply_cut(self, said: str, reason: CutReason) -> None:
        await self._cleared()
        await super().reply_cut(said, reason)

    async def clear_output(self) -> bool:
        if self.session is not None and self.response is not None:
            await self.session.cancel()
        await self._cleared()
        return True

    async def _cleared(self) -> None:
        stopped = self.track.clear()
        if stopped is not None:
            await self.event("output_audio_buffer.cleared", response_id=stopped)


class Call:
    """One WebRTC call: its peer connection, protocol and the events waiting to be handled."""

    def __init__(self, call_id: str, pc: RTCPeerConnection, protocol: OpenAIRealtime) -> None:
        self.id = call_id
        self.pc = pc
        self.protocol = protocol
        self.channel: Any = None
        self.pending: list[str] = []
        self.inbox: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self.connected = asyncio.Event()
        self.ended = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, event: dict[str, Any]) -> None:
        text = json.dumps(event, ensure_ascii=False)
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        elif len(self.pending) < MAX_QUEUED_EVENTS:
            self.pending.append(text)  # before the data channel opens: sent when it does


def ice_servers(urls: list[str]) -> list[RTCIceServer]:
    """WEBRTC_ICE_SERVERS as aiortc's: `turn:user:password@host:port` carries its credentials."""
    servers = []
    for url in urls:
        scheme, _, rest = url.partition(":")
        credentials, at, host = rest.rpartition("@")
        if at:
            user, _, password = credentials.partition(":")
            servers.append(RTCIceServer(urls=f"{scheme}:{host}", username=user, credential=password))
        else:
            servers.append(RTCIceServer(urls=url))
    return servers


async def _offer(request: Request) -> tuple[str, dict[str, Any]]:
    """The SDP offer and the session configuration of a call request."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    session: Any = {}
    if kind == "application/sdp":
        body = await request.body()
        if len(body) > MAX_SDP_BYTES:
            raise InvalidInputError(f"An SDP offer may be at most {MAX_SDP_BYTES} bytes.", param="sdp")
        sdp = body.decode("utf-8", errors="replace")
    elif kind == "multipart/form-data":
        form = await request.form(max_files=2, max_fields=4, max_part_size=MAX_SDP_BYTES)
        raw_sdp, raw_session = form.get("sdp"), form.get("session")
        sdp = raw_sdp if isinstance(raw_sdp, str) else (await raw_sdp.read()).decode() if raw_sdp else ""
        if raw_session is not None:
            text = raw_session if isinstance(raw_session, str) else (await raw_session.read()).decode()
            try:
                session = json.loads(text)
            except json.JSONDecodeError as e:
                raise InvalidInputError(f"'session' is not valid JSON ({e.msg}).", param="session") from e
    else:
        raise UnsupportedMediaTypeError(
            "Send the SDP offer as application/sdp, or as multipart/form-data with 'sdp' (and 'session').",
            param="sdp",
        )
    if not sdp.strip():
        raise InvalidInputError("Missing required parameter: 'sdp'.", param="sdp")
    if not sdp.lstrip().startswith("v=0"):
        raise InvalidInputError(
            "Invalid value for 'sdp': not an SDP offer (it begins with v=0).", param="sdp"
        )
    if "\nm=audio " not in sdp.replace("\r\n", "\n"):
        raise InvalidInputError("Invalid value for 'sdp': the offer has no audio (m=audio).", param="sdp")
    if not isinstance(session, dict):
        raise InvalidInputError("'session' must be a JSON object.", param="session")
    try:
        SessionFields.model_validate(session)
    except ValidationError as e:
        problem = validation_problem(e, "session")
        raise InvalidInputError(problem.message, param=problem.param) from None
    return sdp, session


@router.post("/realtime/calls", status_code=201, response_class=Response)
async def create_call(request: Request) -> Response:
    """A WebRTC call: the SDP offer in, the SDP answer out (201, `Location` names the call)."""
    settings: Settings = request.app.state.settings
    services: Services = request.app.state.gate.require()
    sdp, session_fields = await _offer(request)
    account = current_account.get()
    if account is not None:
        refusal = account.admit(audio=True, session=True)
        if refusal is not None:
            raise QuotaError(refusal.message, refusal.code, refusal.retry_after_s)
    calls: Calls = request.app.state.calls
    call_id = new_id("rtc")
    events = VoiceMap(services.tts.voices, settings.openai.voices)
    holder: dict[str, Call] = {}

    async def send(event: dict[str, Any]) -> None:
        await holder[call_id].send(event)

    protocol = OpenAIRealtime(
        send,
        settings.realtime,
        services.realtime.turn_detection,
        events,
        model=str(session_fields.get("model") or ""),
        mcp_servers={name: server.url for name, server in settings.tools.mcp_servers.items()},
        events=WebRtcEvents,
    )
    server = protocol.server
    assert isinstance(server, WebRtcEvents)
    server.track = ReplyTrack(
        lambda rid: server.playing("output_audio_buffer.started", rid),
        lambda rid: server.playing("output_audio_buffer.stopped", rid),
    )
    stack = contextlib.AsyncExitStack()
    try:
        if account is not None:
            stack.callback(account.end_session)
        conversation_id = check_conversation_id(request.query_params.get("conversation_id") or None)
        session = await stack.enter_async_context(services.realtime.session(server, conversation_id))
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(settings.realtime.webrtc_ice_servers)))
        stack.push_async_callback(pc.close)
        call = holder[call_id] = Call(call_id, pc, protocol)
        _wire(call, session.feed, settings)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except (ValueError, TypeError, KeyError, IndexError) as e:
            why = str(e)[:200] or type(e).__name__
            raise InvalidInputError(f"Invalid value for 'sdp': {why}", param="sdp") from None
        pc.addTrack(server.track)
        await pc.setLocalDescription(await pc.createAnswer())
        await protocol.start(session)
        if session_fields:
            await protocol.handle({"type": "session.update", "session": session_fields})
    except BaseException:
        await stack.aclose()
        raise
    calls.open[call_id] = call
    task = asyncio.create_task(_run(call, calls, stack, settings))
    call.tasks.add(task)
    logger.info("webrtc call %s: answered", call_id)
    return Response(
        pc.localDescription.sdp,
        status_code=201,
        media_type="application/sdp",
        headers={"Location": f"/v1/realtime/calls/{call_id}"},
    )


def _wire(call: Call, feed: Feed, settings: Settings) -> None:
    """The peer connection's events: the caller's audio, the events channel, its state."""
    pc = call.pc
    limit = settings.realtime.max_event_bytes

    @pc.on("track")
    def on_track(track: Any) -> None:
        if track.kind == "audio":
            task = asyncio.create_task(listen(track, feed))
            call.tasks.add(task)
            task.add_done_callback(call.tasks.discard)

    @pc.on("datachannel")
    def on_channel(channel: Any) -> None:
        if channel.label != EVENTS_CHANNEL or call.channel is not None:
            return
        call.channel = channel
        for text in call.pending:
            channel.send(text)
        call.pending.clear()

        @channel.on("message")  # type: ignore[untyped-decorator]
        def on_message(message: Any) -> None:
            if not isinstance(message, str) or len(message.encode()) > limit:
                message = json.dumps({"type": "_too_large"})
            with contextlib.suppress(asyncio.QueueFull):  # a flood beyond the queue is lost
                call.inbox.put_nowait(message)

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected":
            call.connected.set()
        elif pc.connectionState in ("failed", "closed"):
            call.ended.set()


async def _run(call: Call, calls: Calls, stack: contextlib.AsyncExitStack, settings: Settings) -> None:
    """The call, from the answer to its end: its events handled in order."""
    limits = settings.realtime
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await _first(call.connected, call.ended)
        if call.connected.is_set() and not call.ended.is_set():
            async with asyncio.timeout(limits.max_session_s):
                while not call.ended.is_set():
                    text = await _next(call)
                    if text is not None:
                        await _handle(call, text, limits.max_event_bytes)
    except TimeoutError:
        logger.info(
            "webrtc call %s: %s",
            call.id,
            "ended at its limit" if call.connected.is_set() else "never connected",
        )
    except Exception:
        logger.exception("webrtc call %s failed", call.id)
    finally:
        for task in list(call.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        calls.open.pop(call.id, None)
        with contextlib.suppress(Exception):
            await stack.aclose()
        logger.info("webrtc call %s: closed", call.id)


async def _first(*flags: asyncio.Event) -> None:
    waits = [asyncio.create_task(flag.wait()) for flag in flags]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def _next(call: Call) -> str | None:
    """The next client event, or None when the call ended first."""
    get = asyncio.create_task(call.inbox.get())
    end = asyncio.create_task(call.ended.wait())
    done, _ = await asyncio.wait({get, end}, return_when=asyncio.FIRST_COMPLETED)
    for task in (get, end):
        if task not in done:
            task.cancel()
    return get.result() if get in done else None


async def _handle(call: Call, text: str, limit: int) -> None:
    server = call.protocol.server
    try:
        event = json.loads(text)
    except json.JSONDecodeError as e:
        await server.error(f"The event is not valid JSON ({e.msg}).", "invalid_json")
        return
    if not isinstance(event, dict):
        await server.error("An event must be a JSON object with a 'type'.", "invalid_json")
    elif event.get("type") == "_too_large":
        await server.error(
            f"An event may be at most {limit} bytes; a larger one was ignored.", "event_too_large"
        )
    else:
        await call.protocol.handle(event)


@router.post("/realtime/calls/{call_id}/hangup", status_code=200)
async def hangup(call_id: str, request: Request) -> dict[str, Any]:
    """End a WebRTC call."""
    calls: Calls = request.app.state.calls
    call = calls.open.get(call_id)
    if call is None or not call_id.startswith("rtc_"):
        raise NotFoundError(f"No call {call_id[:64]!r} is open.", param="call_id")
    call.ended.set()
    return {}
