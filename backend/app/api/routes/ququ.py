"""QuQu's backend API (the Chinese dictation app's server), as aliases over our services, so that
its client works with only the server's address changed. Request fields, response fields and the
error shape (`{"success": false, "error": ...}`) are QuQu's; docs/compat.md lists them.

Whisper punctuates as it transcribes, where QuQu's FunASR models ran a separate punctuation model:
`raw_text` is the transcript without its punctuation, `text` the punctuated one (`use_punc=false`:
the raw one). `use_vad` switches the STT's voice-activity filter; `hotword` (space-separated words)
biases the decoding.
"""

from __future__ import annotations

import math
import time
import unicodedata
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from pydantic import BaseModel, Field

from backend.app import __version__
from backend.app.api.deps import (
    ChatServiceDep,
    GateDep,
    SettingsDep,
    STTServiceDep,
    read_upload,
    require_json,
    require_multipart,
)
from backend.app.container import cuda_available, engine_name
from backend.app.core.errors import InvalidInputError
from backend.app.core.values import TranscribeOptions, Transcription
from backend.app.services.optimize import TranscriptOptimizer

router = APIRouter(prefix="/api", tags=["QuQu compatibility"])

QuquMode = Literal["optimize", "format", "punctuate", "custom"]


def strip_punctuation(text: str) -> str:
    """The transcript as an unpunctuated recogniser gives it: punctuation out, spaces collapsed."""
    kept = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(kept.split())


def _confidence(result: Transcription) -> float:
    """The mean per-token probability over the segments (0.0 for silence)."""
    if not result.segments:
        return 0.0
    mean = sum(s.avg_logprob for s in result.segments) / len(result.segments)
    return round(math.exp(mean), 4)


def _asr_result(result: Transcription, use_punc: bool, model: str) -> dict[str, Any]:
    raw = strip_punctuation(result.text)
    return {
        "success": True,
        "text": result.text if use_punc else raw,
        "raw_text": raw,
        "confidence": _confidence(result),
        "duration": result.duration,
        "language": result.language,
        "model": model,
        "model_type": "faster-whisper",
    }


async def _transcribe(
    stt: Any, settings: Any, audio: UploadFile, use_vad: bool, use_punc: bool, hotword: str
) -> dict[str, Any]:
    data = await read_upload(audio, settings, "audio")
    if len(hotword) > 1000:
        raise InvalidInputError("hotword is longer than 1000 characters", param="hotword")
    options = TranscribeOptions(hotwords=hotword.strip() or None, vad_filter=use_vad)
    result = await stt.transcribe(data, options)
    return _asr_result(result, use_punc, stt.info.id or stt.info.model)


@router.get("/health")
async def health(gate: GateDep) -> dict[str, str]:
    """`healthy` once the models are loaded (`loading` before), as QuQu's health check reads it."""
    ready = gate.ready
    return {
        "status": "healthy" if ready else "loading",
        "message": "the voice server is running" if ready else "the models are loading",
    }


@router.get("/status")
async def status(request: Request, gate: GateDep) -> dict[str, Any]:
    """The recogniser, the LLM and the GPU, in QuQu's status shape."""
    services = gate.services
    settings = request.app.state.settings
    loaded = services is not None
    stt_model = services.stt.info.id if services else None
    llm_model = services.chat.info.id if services else None
    return {
        "success": True,
        "funasr": {
            "success": loaded,
            "installed": True,
            "initialized": loaded,
            "version": __version__,
            "engine": "faster-whisper",
            "model": stt_model,
            "models": {"asr": loaded, "vad": loaded, "punc": loaded},
        },
        "ollama": {
            "success": loaded,
            "available": loaded,
            "engine": engine_name("llm", settings),
            "model": llm_model,
        },
        "gpu_available": cuda_available(),
        "performance_stats": request.app.state.ququ_stats.as_dict(loaded),
    }


@router.post("/asr/transcribe", dependencies=[Depends(require_multipart)])
async def transcribe(
    request: Request,
    stt: STTServiceDep,
    settings: SettingsDep,
    audio: Annotated[UploadFile, File(description="The recording (wav, mp3, m4a, webm, ...).")],
    use_vad: Annotated[bool, Form(description="Skip silence with the voice-activity filter.")] = True,
    use_punc: Annotated[bool, Form(description="Punctuated `text` (false: as `raw_text`).")] = True,
    hotword: Annotated[str, Form(description="Words to favour, separated by spaces.")] = "",
) -> dict[str, Any]:
    """Speech to text."""
    result = await _transcribe(stt, settings, audio, use_vad, use_punc, hotword)
    request.app.state.ququ_stats.count(result["duration"])
    return result


class OptimizeBody(BaseModel):
    text: str = Field(..., max_length=100_000)
    mode: QuquMode = "optimize"
    custom_prompt: str | None = None


@router.post("/llm/optimize", dependencies=[Depends(require_json)])
async def optimize(body: OptimizeBody, chat: ChatServiceDep) -> dict[str, Any]:
    """Rewrite a transcript with the LLM: `optimize` (fillers out), `format`, `punctuate` (words
    kept, verified) or `custom` (`custom_prompt`)."""
    started = time.perf_counter()
    result = await TranscriptOptimizer(chat).optimize(body.text, body.mode, body.custom_prompt)
    return {
        "success": True,
        "original_text": body.text,
        "optimized_text": result.text,
        "mode": body.mode,
        "model": chat.info.id or chat.info.model,
        "warnings": result.warnings,
        "duration": round(time.perf_counter() - started, 3),
    }


@router.post("/asr/transcribe-and-optimize", dependencies=[Depends(require_multipart)])
async def transcribe_and_optimize(
    request: Request,
    stt: STTServiceDep,
    chat: ChatServiceDep,
    settings: SettingsDep,
    audio: Annotated[UploadFile, File(description="The recording.")],
    use_vad: Annotated[bool, Form()] = True,
    use_punc: Annotated[bool, Form()] = True,
    hotword: Annotated[str, Form()] = "",
    optimize_mode: Annotated[
        QuquMode | Literal["none"], Form(description="`none` skips the LLM.")
    ] = "optimize",
    mode: Annotated[QuquMode | None, Form(description="The same as optimize_mode (either name).")] = None,
    custom_prompt: Annotated[str | None, Form()] = None,
) -> dict[str, Any]:
    """Speech to text, then the LLM's rewrite of it, in one call."""
    asr = await _transcribe(stt, settings, audio, use_vad, use_punc, hotword)
    request.app.state.ququ_stats.count(asr["duration"])
    chosen = mode or optimize_mode
    optimized, warnings = asr["text"], []
    if chosen != "none" and asr["text"].strip():
        rewritten = await TranscriptOptimizer(chat).optimize(asr["text"], chosen, custom_prompt)
        optimized, warnings = rewritten.text, rewritten.warnings
    return {
        "success": True,
        "text": optimized,
        "raw_text": asr["raw_text"],
        "original_text": asr["text"],
        "recognized_text": asr["text"],
        "optimized_text": optimized,
        "optimize_mode": chosen,
        "model": asr["model"],
        "llm_model": chat.info.id or chat.info.model,
        "duration": asr["duration"],
        "warnings": warnings,
        "asr_result": asr,
    }


class QuquStats:
    """What QuQu's status reports as `performance_stats`: transcriptions served and their audio."""

    def __init__(self) -> None:
        self.transcriptions = 0
        self.audio_s = 0.0

    def count(self, duration: float) -> None:
        self.transcriptions += 1
        self.audio_s += duration

    def as_dict(self, loaded: bool) -> dict[str, Any]:
        return {
            "transcription_count": self.transcriptions,
            "total_audio_duration": round(self.audio_s, 2),
            "average_duration": round(self.audio_s / max(1, self.transcriptions), 2),
            "initialized": loaded,
            "models_loaded": {"asr": loaded, "vad": loaded, "punc": loaded},
        }
