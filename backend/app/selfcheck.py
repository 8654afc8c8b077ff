"""`python -m backend.app check [stt] [chat] [tts]`: load one stage (or several) on the configured
model, run it once on built-in input, and print what it did and how long it took, without starting
the server: the per-stage self-tests of the backend this one replaces (`STTService().test()`,
`ChatService().test()`, `python app/tts_vibe.py`).

TTS speaks a fixed sentence; STT hears that speech when TTS is checked too, else the default voice
clip of VOICES_DIR; chat answers a fixed question. Exit status 0, or 2 when a model cannot load.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.types import Audio
from backend.app.backends import registry
from backend.app.core.config import Settings
from backend.app.core.values import (
    ChatMessage,
    GenerationOptions,
    ModelInfo,
    SynthesisRequest,
    TranscribeOptions,
)
from backend.app.voices.library import VoiceLibrary

STAGES = ("stt", "chat", "tts")
SENTENCE = "This is a self-check of the speech engine, one sentence long."
QUESTION = "In one short sentence: what does a voice assistant do?"


def run(settings: Settings, stages: Sequence[str]) -> int:
    """Check `stages` (all three when empty), in the order TTS, STT, chat; print one report each."""
    wanted = [stage for stage in ("tts", "stt", "chat") if stage in (stages or STAGES)]
    spoken: Audio | None = None
    for stage in wanted:
        if stage == "tts":
            spoken = check_tts(settings)
        elif stage == "stt":
            check_stt(settings, spoken)
        else:
            check_chat(settings)
    return 0


def _loaded(stage: str, info: ModelInfo, began: float) -> None:
    print(f"{stage}: {info.model} on {info.device}, loaded in {time.perf_counter() - began:.1f} s")


def check_tts(settings: Settings) -> Audio:
    began = time.perf_counter()
    tts = registry.load_tts(settings)
    _loaded("tts", tts.info, began)
    text = getattr(tts, "warm_up_text", None) or SENTENCE
    tts.synthesize(SynthesisRequest(text))  # first-call set-up is not the engine's speed
    began = time.perf_counter()
    spoken = tts.synthesize(SynthesisRequest(text))
    took = time.perf_counter() - began
    factor = took / max(spoken.duration, 1e-6)
    print(f"  spoke {spoken.duration:.2f} s of audio in {took:.2f} s (real-time factor {factor:.3f})")
    return spoken


def check_stt(settings: Settings, spoken: Audio | None) -> None:
    began = time.perf_counter()
    stt = registry.load_stt(settings)
    _loaded("stt", stt.info, began)
    audio, source = _speech(settings, spoken, stt.sample_rate)
    began = time.perf_counter()
    heard = stt.transcribe(audio, TranscribeOptions())
    took = time.perf_counter() - began
    print(f"  heard {audio.duration:.2f} s ({source}) in {took:.2f} s [{heard.language}]: {heard.text!r}")


def check_chat(settings: Settings) -> None:
    began = time.perf_counter()
    chat = registry.load_chat(settings)
    _loaded("chat", chat.info, began)
    messages = [ChatMessage("system", settings.llm.system_prompt), ChatMessage("user", QUESTION)]
    began = time.perf_counter()
    first: float | None = None
    parts = []
    for delta in chat.chat_stream(messages, GenerationOptions(max_tokens=48, temperature=0.0)):
        first = first if first is not None else time.perf_counter() - began
        parts.append(delta)
    took = time.perf_counter() - began
    first_ms = 1000 * (first if first is not None else took)
    reply = "".join(parts).strip()
    print(f"  first token after {first_ms:.0f} ms, {len(parts)} pieces in {took:.2f} s: {reply!r}")


def _speech(settings: Settings, spoken: Audio | None, rate: int) -> tuple[Audio, str]:
    """What STT hears: the TTS check's speech, else the default voice clip (blocking)."""
    if spoken is not None:
        return resample(spoken, rate), "the TTS check's speech"
    library = VoiceLibrary(settings.voices.dir, settings.voices.default, settings.storage.data_dir / "voices")
    voice = library.default
    if voice is None:
        return Audio.silence(2.0, rate), "2 s of silence: VOICES_DIR has no clip"
    return decode_audio(voice.path.read_bytes(), rate, 60), f"the voice clip {voice.file}"
