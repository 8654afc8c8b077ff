"""WebSocket /ws/conversation: the realtime voice session (protocol in docs/realtime.md)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from backend.app.api.protocols.conversation_ws.protocol import OwnProtocol, ProtocolError
from backend.app.api.protocols.websocket import SEND_TIMEOUT_S, ClientGone, Limit, Receiver, Sender
from backend.app.container import Services
from backend.app.core.errors import AppError, InvalidInputError
from backend.app.core.json_guard import check_json_bytes
from backend.app.services.realtime.reply import Outbox
from backend.app.services.realtime.session import RealtimeSession

logger = logging.getLogger(__name__)

router = APIRouter(tags=["realtime"])

SUBPROTOCOL = "voice-dialogue"


async def _close_with_error(websocket: WebSocket, code: str, message: str, close_code: int) -> None:
    """Tell the client why, then close; a client already gone is fine."""
    try:
        event = json.dumps({"type": "error", "code": code, "message": message})
        await asyncio.wait_for(websocket.send_text(event), SEND_TIMEOUT_S)
        await websocket.close(close_code, reason=message[:120])
    except (WebSocketDisconnect, RuntimeError, TimeoutError):
        pass


def _parse(text: str) -> dict[str, Any]:
    try:
        message = check_json_bytes(text)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"a text message must be a JSON object ({e.msg})") from e
    except InvalidInputError as e:
        raise ProtocolError(f"a text message must be valid JSON text: {e.message}") from e
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError('a text message must be a JSON object with a "type"')
    return message


async def _serve(
    websocket: WebSocket, protocol: OwnProtocol, session: RealtimeSession, sender: Sender
) -> None:
    """The receive loop: limits, then each message to the session. Returns on a clean end."""
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
        request = _parse(text or "")
        kind = request["type"]
        if kind == "start":
            await protocol.start(request)
        elif kind == "interrupt":
            await protocol.interrupt()
        elif kind == "stop":
            await session.stop()
            await sender.text(json.dumps({"type": "session_end"}))
            await websocket.close(1000)
            return
        else:
            raise ProtocolError(f"unknown message type {kind!r} (start, stop, interrupt)")


@router.websocket("/ws/conversation")
async def realtime_conversation(websocket: WebSocket) -> None:
    """Realtime voice conversation: PCM16 in, VAD turn-taking, streamed replies, barge-in."""
    # A browser that sends its key as a subprotocol also offers ours, and gets it back.
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    services: Services | None = getattr(websocket.app.state, "services", None)
    if services is None:
        await _close_with_error(websocket, "not_ready", "the models are still loading; retry shortly", 1013)
        return
    sender = Sender(websocket)

    async def send_event(event: dict[str, Any]) -> None:
        await sender.text(json.dumps(event, ensure_ascii=False))

    try:
        realtime = services.realtime
        protocol = OwnProtocol(Outbox(send_event, sender.bytes), realtime.settings, realtime.vad_settings)
        async with realtime.session(protocol) as session:
            protocol.session = session
            try:
                await _serve(websocket, protocol, session, sender)
            except ProtocolError as e:
                await _close_with_error(websocket, e.code, e.message, e.close_code)
            except (WebSocketDisconnect, ClientGone):
                pass  # the client went away: the session's work is cancelled on the way out
    except AppError as e:  # too many sessions
        await _close_with_error(websocket, e.code, e.message, 1013)
