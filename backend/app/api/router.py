"""Every route of the server, in one place: the app factory includes `router`.

The seed API (page, health, metrics, STT, optimize, chat, TTS, spoken turns, conversations, voices,
the realtime WebSocket, phone calls' media streams), then the OpenAI-compatible routes under /v1
and QuQu's under /api.
"""

from __future__ import annotations

from fastapi import APIRouter

from backend.app.api import v1
from backend.app.api.protocols.conversation_ws import route as realtime
from backend.app.api.protocols.conversation_ws import webrtc as realtime_calls
from backend.app.api.protocols.phone import twilio
from backend.app.api.routes import (
    captioned,
    chat,
    conversation,
    conversations,
    health,
    metrics,
    optimize,
    page,
    ququ,
    speakers,
    stt,
    tts,
)

router = APIRouter()
for module in (
    page,
    health,
    metrics,
    stt,
    optimize,
    chat,
    tts,
    captioned,
    conversation,
    conversations,
    speakers,
    realtime,
    realtime_calls,
    twilio,
    ququ,
):
    router.include_router(module.router)
router.include_router(v1.router)
