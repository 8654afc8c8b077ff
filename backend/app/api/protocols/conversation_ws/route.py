"""WebSocket /ws/conversation: the realtime voice session in our protocol (docs/realtime.md)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from backend.app.api.protocols.conversation_ws.protocol import Outbox, OwnProtocol
from backend.app.api.protocols.errors import ProtocolError
from backend.app.api.protocols.websocket import Limit, Receiver, Sender, close_with
from backend.app.core.errors import AppError, ClientGone
from backend.app.services.realtime.service import RealtimeService
from backend.app.services.realtime.session import RealtimeSession

router = APIRouter(tags=["realtime"])

SUBPROTOCOL = "voice-dialogue"


async def _refuse(websocket: WebSocket, error: ProtocolError) -> None:
    """Our `error` event, then the close."""
    event = {"type": "error", "code": error.code, "message": error.message}
    await close_with(websocket, event, error)


async def _serve(
    websocket: WebSocket, protocol: OwnProtocol, session: RealtimeSession, sender: Sender
) -> None:
    """The receive loop: limits, then each message to the protocol. Returns on a clean end."""
    limits = session.settings
    receiver = Receiver(websocket, sender, limits.idle_timeout_s, limits.max_session_s)
    while True:
        try:
            message = await receiver.next(lambda: session.busy)
        except Limit as e:
            if e.reason == "idle_timeout":
                raise ProtocolError(
                    f"nothing received for {limits.idle_timeout_s:g} s", "idle_timeout", 1000
                ) from None
            raise ProtocolError(
                f"the session reached its {limits.max_session_s:g} s limit", "session_limit", 1000
            ) from None
        if message["type"] == "websocket.disconnect":
            return
        data, text = message.get("bytes"), message.get("text")
        size = len(data) if data is not None else len((text or "").encode())
        if size > limits.max_frame_bytes:
            raise ProtocolError(
                f"a message may be at most {limits.max_frame_bytes} bytes; this one was {size}",
                "frame_too_large",
                1009,
            )
        if data is not None:
            await protocol.audio(data)
            continue
        await protocol.text(text or "")
        if protocol.ended:
            await websocket.close(1000)
            return


@router.websocket("/ws/conversation")
async def realtime_conversation(websocket: WebSocket) -> None:
    """Realtime voice conversation: PCM16 in, VAD turn-taking, streamed replies, barge-in."""
    # A browser that sends its key as a subprotocol also offers ours, and gets it back.
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        realtime: RealtimeService = websocket.app.state.gate.require().realtime
    except AppError as e:  # the models are still loading
        await _refuse(websocket, ProtocolError(e.message, e.code, 1013))
        return
    sender = Sender(websocket)

    async def send_event(event: dict[str, Any]) -> None:
        await sender.text(json.dumps(event, ensure_ascii=False))

    try:
        protocol = OwnProtocol(
            Outbox(send_event, sender.bytes), realtime.session_settings, realtime.turn_detection
        )
        async with realtime.session(protocol) as session:
            protocol.session = session
            try:
                await _serve(websocket, protocol, session, sender)
            except ProtocolError as e:
                await _refuse(websocket, e)
            except (WebSocketDisconnect, ClientGone):
                pass  # the client went away: the session's work is cancelled on the way out
    except AppError as e:  # too many sessions
        await _refuse(websocket, ProtocolError(e.message, e.code, 1013))
