"""The OpenAI-compatible API under /v1: audio (transcriptions, translations, speech), chat
completions, the model list and the Realtime WebSocket. Errors here take OpenAI's shape (see
core/errors.py)."""

from __future__ import annotations

from fastapi import APIRouter

from backend.app.api.protocols.openai_realtime import route as realtime
from backend.app.api.protocols.openai_realtime import webrtc
from backend.app.api.v1 import audio, chat, models

router = APIRouter(prefix="/v1")
for module in (models, audio, chat, realtime, webrtc):
    router.include_router(module.router)
