"""WebSocket /v1/realtime: OpenAI's Realtime protocol (session.py, events.py) over our pipeline,
for the `openai` SDK's `client.realtime.connect(...)` and clients built for OpenAI."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from backend.app.api.protocols.errors import ProtocolError
from backend.app.api.protocols.openai_realtime.schema import new_id
from backend.app.api.protocols.openai_realtime.session import OpenAIRealtime
from backend.app.api.protocols.websocket import Limit, Receiver, Sender, close_with
from backend.app.api.v1.compat import VoiceMap
from backend.app.container import Services
from backend.app.core.config import Settings
from backend.app.core.errors import AppError, ClientGone, InvalidInputError
from backend.app.core.json_guard import check_json_bytes
from backend.app.services.history import check_conversation_id

router = APIRouter(tags=["openai"])

SUBPROTOCOL = "realtime"
"""What a browser offers (beside `openai-insecure-api-key.<key>`), and gets back."""


async def _refuse(websocket: WebSocket, error: ProtocolError) -> None:
    """An error event in OpenAI's shape, then the close."""
    event = {
        "type": "error",
        "event_id": new_id("event"),
        "error": {
            "type": "invalid_request_error",
            "code": error.code,
            "message": error.message,
            "param": None,
            "event_id": None,
        },
    }
    await close_with(websocket, event, error)


def _parse(text: str) -> dict[str, Any]:
    try:
        event = check_json_bytes(text)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"The event is not valid JSON ({e.msg}).") from e
    if not isinstance(event, dict):
        raise InvalidInputError("An event must be a JSON object with a 'type'.")
    return event


async def _serve(websocket: WebSocket, protocol: OpenAIRealtime, sender: Sender, settings: Settings) -> None:
    """The receive loop: limits, then each event to the protocol. Returns when the client goes."""
    limits = settings.realtime
    session = protocol.session
    assert session is not None
    receiver = Receiver(websocket, sender, limits.idle_timeout_s, limits.max_session_s)
    while True:
        try:
            message = await receiver.next(lambda: session.busy)
        except Limit as e:
            if e.reason == "idle_timeout":
                raise ProtocolError(
                    f"Nothing was received for {limits.idle_timeout_s:g} s.", "idle_timeout", 1000
                ) from None
            raise ProtocolError(
                f"The session reached its {limits.max_session_s:g} s limit.", "session_expired", 1000
            ) from None
        if message["type"] == "websocket.disconnect":
            return
        data, text = message.get("bytes"), message.get("text")
        if data is not None:
            await protocol.server.error(
                "Binary messages are not part of the Realtime protocol: send audio as "
                "input_audio_buffer.append events, base64 PCM16.",
                "invalid_value",
            )
            continue
        size = len((text or "").encode())
        if size > limits.max_event_bytes:
            await protocol.server.error(
                f"An event may be at most {limits.max_event_bytes} bytes (WS_MAX_EVENT_BYTES); this one was "
                f"{size}, and was ignored. Send audio in smaller appends.",
                "event_too_large",
            )
            continue
        try:
            event = _parse(text or "")
        except AppError as e:
            await protocol.server.error(e.message, "invalid_json")
            continue
        await protocol.handle(event)


@router.websocket("/realtime")
async def realtime(websocket: WebSocket) -> None:
    """OpenAI's Realtime protocol: `?model=` (any name), `?intent=transcription` for a
    transcription session; `?conversation_id=` continues a stored conversation."""
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    settings: Settings = websocket.app.state.settings
    try:
        services: Services = websocket.app.state.gate.require()
    except AppError as e:  # the models are still loading
        await _refuse(websocket, ProtocolError(e.message, e.code, 1013))
        return
    query = websocket.query_params
    try:
        conversation_id = check_conversation_id(query.get("conversation_id") or None)
    except AppError as e:
        await _refuse(websocket, ProtocolError(e.message, "invalid_value"))
        return
    sender = Sender(websocket)

    async def send(event: dict[str, Any]) -> None:
        await sender.text(json.dumps(event, ensure_ascii=False))

    protocol = OpenAIRealtime(
        send,
        settings.realtime,
        services.realtime.turn_detection,
        VoiceMap(services.tts.voices, settings.openai.voices),
        model=query.get("model") or "",
        transcription_only=query.get("intent") == "transcription",
        mcp_servers={name: server.url for name, server in settings.tools.mcp_servers.items()},
    )
    try:
        async with services.realtime.session(protocol.server, conversation_id) as session:
            try:
                await protocol.start(session)
                await _serve(websocket, protocol, sender, settings)
            except ProtocolError as e:
                await _refuse(websocket, e)
            except (WebSocketDisconnect, ClientGone):
                pass  # the client went away: the session's work is cancelled on the way out
    except AppError as e:  # too many sessions
        await _refuse(websocket, ProtocolError(e.message, e.code, 1013))
