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
closed after 20 s (webrtc_call.py); every call ends at WS_MAX_SESSION_S, and counts among
WS_MAX_SESSIONS (and the key's realtime_sessions)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

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
from backend.app.api.protocols.webrtc_audio import TRACK_FORMAT, ReplyTrack
from backend.app.api.protocols.webrtc_call import (
    MAX_SDP_BYTES,
    Call,
    answer,
    answered,
    check_offer,
    hang_up,
    key_session,
    peer,
    start,
)
from backend.app.api.protocols.wire_audio import WireEncoder
from backend.app.api.v1.compat import VoiceMap
from backend.app.container import Services
from backend.app.core.config import Settings
from backend.app.core.errors import InvalidInputError, NotFoundError, UnsupportedMediaTypeError
from backend.app.services.history import check_conversation_id
from backend.app.services.realtime.listener import CutReason
from backend.app.services.speech import ReplyAudio
from backend.app.services.turn_events import Turn

logger = logging.getLogger(__name__)

router = APIRouter(tags=["openai"])

EVENTS_CHANNEL = "oai-events"


class WebRtcEvents(ServerEvents):
    """A call's server events: the reply's audio goes to the call's track (Opus, 48 kHz), not
    into events; the session's audio format is moot on the wire and shown as set."""

    track: ReplyTrack
    _encoder: tuple[str, WireEncoder] | None = None

    tasks: set[asyncio.Task[None]]

    def playing(self, kind: str, response_id: str) -> None:
        """The track began or finished playing a response: say so (from the track's loop)."""
        task = asyncio.get_running_loop().create_task(self.event(kind, response_id=response_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def speech_started(self, at_s: float) -> None:
        await super().speech_started(at_s)
        if self.response is None and self.track.queued_s:  # over the tail of a reply sent whole
            await self._cleared()

    async def reply_audio(self, piece: ReplyAudio, first: bool) -> None:
        response = self.response
        if response is None:
            return
        if self._encoder is None or self._encoder[0] != response.id:
            self._encoder = (response.id, WireEncoder(TRACK_FORMAT))
        response.keep(piece)
        await self._play(response, self._encoder[1].encode(piece.audio.samples, piece.audio.sample_rate))

    async def send_audio(
        self, response: ResponseState, data: bytes, words: list[dict[str, object]] | None = None
    ) -> None:
        pass  # no output_audio deltas over WebRTC: the audio is on the track

    async def _play(self, response: ResponseState, data: bytes) -> None:
        def pushed(seconds: float) -> None:
            response.audio_s += seconds
            if self.session is not None:
                self.session.limit_heard(self.track.played_s)

        await self.track.play(response.id, data, pushed)

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


async def _text(part: Any) -> str:
    """A form field's text, or an uploaded part's (decoded leniently: a bad byte is the offer's fault)."""
    return part if isinstance(part, str) else bytes(await part.read()).decode(errors="replace")


async def _offer(request: Request) -> tuple[str, dict[str, Any]]:
    """The SDP offer and the session configuration of a call request."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    session: Any = {}
    if kind == "application/sdp":
        sdp = (await request.body()).decode("utf-8", errors="replace")
    elif kind == "multipart/form-data":
        form = await request.form(max_files=2, max_fields=4, max_part_size=MAX_SDP_BYTES)
        raw_sdp, raw_session = form.get("sdp"), form.get("session")
        sdp = await _text(raw_sdp) if raw_sdp is not None else ""
        if raw_session is not None:
            text = await _text(raw_session)
            try:
                session = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as e:
                why = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
                raise InvalidInputError(f"'session' is not valid JSON ({why}).", param="session") from None
    else:
        raise UnsupportedMediaTypeError(
            "Send the SDP offer as application/sdp, or as multipart/form-data with 'sdp' (and 'session').",
            param="sdp",
        )
    check_offer(sdp)
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
    calls: Calls = request.app.state.calls
    call_id = new_id("rtc")
    events = VoiceMap(services.tts.voices, settings.openai.voices)
    holder: dict[str, Call] = {}

    async def send(event: dict[str, Any]) -> None:
        await holder[call_id].send(json.dumps(event, ensure_ascii=False))

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
    server.tasks = set()
    server.track = ReplyTrack(
        lambda rid: server.playing("output_audio_buffer.started", rid),
        lambda rid: server.playing("output_audio_buffer.stopped", rid),
    )
    stack = contextlib.AsyncExitStack()
    try:
        key_session(stack)
        conversation_id = check_conversation_id(request.query_params.get("conversation_id") or None)
        session = await stack.enter_async_context(services.realtime.session(server, conversation_id))
        call = holder[call_id] = Call(call_id, peer(settings), EVENTS_CHANNEL)
        server.tasks = call.tasks
        answer_sdp = await answer(call, sdp, server.track, session.feed, settings, stack)
        await protocol.start(session)
        if session_fields:
            await protocol.handle({"type": "session.update", "session": session_fields})
    except BaseException:
        await stack.aclose()
        raise

    async def handle(text: str | None) -> bool:
        await _handle(protocol, text, settings.realtime.max_event_bytes)
        return True

    start(call, calls, stack, handle, settings)
    return answered(answer_sdp, f"/v1/realtime/calls/{call_id}")


async def _handle(protocol: OpenAIRealtime, text: str | None, limit: int) -> None:
    server = protocol.server
    if text is None:
        message = f"An event may be at most {limit} bytes (WS_MAX_EVENT_BYTES); a larger one was ignored."
        await server.error(message, "event_too_large")
        return
    try:
        event = json.loads(text)
    except json.JSONDecodeError as e:
        await server.error(f"The event is not valid JSON ({e.msg}).", "invalid_json")
        return
    if not isinstance(event, dict):
        await server.error("An event must be a JSON object with a 'type'.", "invalid_json")
        return
    await protocol.handle(event)


@router.post("/realtime/calls/{call_id}/hangup", status_code=200)
async def hangup(call_id: str, request: Request) -> dict[str, Any]:
    """End a WebRTC call."""
    if not call_id.startswith("rtc_") or not await hang_up(request.app.state.calls, call_id):
        raise NotFoundError(f"No call {call_id[:64]!r} is open.", param="call_id")
    return {}
