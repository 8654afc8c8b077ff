"""Our realtime protocol over WebRTC, for the page: `POST /conversation/calls` takes the browser's
SDP offer (`application/sdp`) and answers with ours (201, `Location` names the call);
`DELETE /conversation/calls/{call_id}` hangs up.

The messages are those of /ws/conversation (docs/realtime.md), as JSON text on the `events` data
channel, except that no audio travels as messages: the microphone is the call's audio track (with
the browser's echo cancellation, noise suppression and gain control) and the reply plays on ours,
paced to what is heard; `audio_end` (with `played_s`) says when a reply has finished playing. A
protocol error is told as an `error` event and ends the call, as it closes the WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from backend.app.api.protocols.calls import Calls
from backend.app.api.protocols.conversation_ws.protocol import Outbox, OwnProtocol
from backend.app.api.protocols.errors import ProtocolError
from backend.app.api.protocols.webrtc_audio import TRACK_FORMAT, ReplyTrack
from backend.app.api.protocols.webrtc_call import (
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
from backend.app.audio.vad import SAMPLE_RATE
from backend.app.container import Services
from backend.app.core.config import Settings
from backend.app.core.errors import NotFoundError, UnsupportedMediaTypeError

router = APIRouter(tags=["realtime"])

CHANNEL = "events"


class TrackOutbox:
    """Our protocol's outbox on a call: events on the data channel, reply audio on the track."""

    def __init__(self, track: ReplyTrack) -> None:
        self.track = track
        self.call: Call | None = None
        self.protocol: OwnProtocol | None = None
        self._rate = SAMPLE_RATE
        self._reply = 0
        self._encoder = WireEncoder(TRACK_FORMAT)

    async def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "audio_start":
            self._reply += 1
            self._rate = int(event["sample_rate"])
            self._encoder = WireEncoder(TRACK_FORMAT)
        elif kind == "turn_end":
            await self._play(self._encoder.flush())
            self.track.finish(str(self._reply))
        elif kind == "interrupted":
            self.track.clear()
        await self.send(event)

    async def audio(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        await self._play(self._encoder.encode(samples, self._rate))

    async def _play(self, data: bytes) -> None:
        def pushed(seconds: float) -> None:
            session = self.protocol.session if self.protocol is not None else None
            if session is not None:
                session.limit_heard(self.track.played_s)

        await self.track.play(str(self._reply), data, pushed)

    def stopped(self, reply: str) -> None:
        """The track finished playing a reply: `audio_end`, with the seconds played."""
        if self.call is not None:
            text = json.dumps({"type": "audio_end", "played_s": round(self.track.played_s, 3)})
            task = asyncio.get_running_loop().create_task(self.call.send(text))
            self.call.tasks.add(task)
            task.add_done_callback(self.call.tasks.discard)

    async def send(self, event: dict[str, Any]) -> None:
        if self.call is not None:
            await self.call.send(json.dumps(event, ensure_ascii=False))


@router.post("/conversation/calls", status_code=201, response_class=Response)
async def conversation_call(request: Request) -> Response:
    """Our realtime session over WebRTC: the SDP offer in, the answer out."""
    settings: Settings = request.app.state.settings
    services: Services = request.app.state.gate.require()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/sdp":
        raise UnsupportedMediaTypeError("Send the SDP offer as application/sdp.", param="sdp")
    sdp = check_offer((await request.body()).decode("utf-8", errors="replace"))
    realtime = services.realtime
    outbox = TrackOutbox(ReplyTrack(lambda reply: None, lambda reply: outbox.stopped(reply)))
    protocol = OwnProtocol(
        Outbox(outbox.event, outbox.audio), realtime.session_settings, realtime.turn_detection
    )
    outbox.protocol = protocol

    async def feed(samples: np.ndarray) -> None:
        if protocol.started and protocol.session is not None:  # after `start`, as on the WebSocket
            await protocol.session.feed(samples)

    stack = contextlib.AsyncExitStack()
    try:
        key_session(stack)
        protocol.session = await stack.enter_async_context(realtime.session(protocol))
        call = outbox.call = Call(f"call_{secrets.token_hex(10)}", peer(settings), CHANNEL)
        answer_sdp = await answer(call, sdp, outbox.track, feed, settings, stack)
    except BaseException:
        await stack.aclose()
        raise

    async def handle(text: str | None) -> bool:
        try:
            if text is None:
                raise ProtocolError(
                    f"a message may be at most {settings.realtime.max_event_bytes} bytes", "frame_too_large"
                )
            await protocol.text(text)
        except ProtocolError as e:
            await outbox.send({"type": "error", "code": e.code, "message": e.message})
            return False
        return not protocol.ended

    calls: Calls = request.app.state.calls
    start(call, calls, stack, handle, settings)
    return answered(answer_sdp, f"/conversation/calls/{call.id}")


@router.delete("/conversation/calls/{call_id}", status_code=204)
async def end_call(call_id: str, request: Request) -> Response:
    """Hang up a call."""
    if not call_id.startswith("call_") or not await hang_up(request.app.state.calls, call_id):
        raise NotFoundError(f"no call {call_id[:64]!r} is open")
    return Response(status_code=204)
