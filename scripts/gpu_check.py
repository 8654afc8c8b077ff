"""End-to-end check of the production models on a GPU: `python -m scripts.gpu_check`.

Loads faster-whisper (STT_MODEL_NAME, default large-v3), the LLM (LLM_BACKEND/LLM_MODEL; the embedded
SmolLM2 when unset) and VibeVoice (TTS_MODEL_NAME, default vibevoice/VibeVoice-1.5B-hf) through the
server's own loading code, then: speaks a sentence in a cloned voice from VOICES_DIR, transcribes it
back (word error rate), answers a question, and prints per-stage timings and real-time factors.

Weights must already be in MODELS_DIR (or the Hugging Face cache) unless --allow-download is given.
When something is missing (no CUDA, no weights, no diffusers) it says exactly what and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-download", action="store_true", help="let the hub download missing weights")
    parser.add_argument("--voice", default="", help="voice name from VOICES_DIR (default: the default voice)")
    args = parser.parse_args()
    if not args.allow_download:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("STT_MODEL_NAME", "large-v3")
    os.environ.setdefault("TTS_MODEL_NAME", "vibevoice/VibeVoice-1.5B-hf")
    os.environ.setdefault("STT_DEVICE", "cuda")
    os.environ.setdefault("TTS_DEVICE", "cuda")
    os.environ.setdefault("LLM_DEVICE", "cuda")

    missing = []
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append("a CUDA GPU visible to torch (torch.cuda.is_available() is False)")
        else:
            print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    except ImportError:
        missing.append("torch")
    try:
        import diffusers  # noqa: F401  (VibeVoice's default noise scheduler)
    except ImportError:
        missing.append("diffusers (pip install -r requirements.txt)")
    if missing:
        print("cannot run the GPU check; missing: " + "; ".join(missing), file=sys.stderr)
        return 2

    from backend.app.audio.decode import resample
    from backend.app.backends import factory
    from backend.app.backends.protocols import (
        ChatMessage,
        GenerationOptions,
        SynthesisRequest,
        TranscribeOptions,
    )
    from backend.app.core.config import Settings
    from backend.app.core.errors import ModelLoadError
    from backend.app.voices.library import VoiceLibrary
    from tests.wer import word_error_rate

    settings = Settings()
    timings: dict[str, float] = {}

    def timed(label: str, fn):  # type: ignore[no-untyped-def]
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        timings[label] = (time.perf_counter() - start) * 1000
        print(f"{label}: {timings[label]:.0f} ms", flush=True)
        return result

    try:
        stt = timed("load STT", lambda: factory.load_stt(settings))
        chat = timed("load LLM", lambda: factory.load_chat(settings))
        tts = timed("load TTS", lambda: factory.load_tts(settings))
    except ModelLoadError as e:
        print(f"cannot run the GPU check: {e}", file=sys.stderr)
        print(
            "weights: run once with --allow-download on a machine with network, or copy them into MODELS_DIR"
        )
        return 2
    for name, model in (("STT", stt), ("LLM", chat), ("TTS", tts)):
        print(f"{name}: {model.info.model} on {model.info.device}")

    library = VoiceLibrary(settings.voices_dir, settings.default_voice)
    voice = library.by_name(args.voice) if args.voice else library.default
    from backend.app.audio.decode import decode_audio

    prompt = None
    if voice and tts.supports_cloning:
        prompt = timed(
            "prepare voice", lambda: tts.prepare_voice(decode_audio(voice.path.read_bytes(), tts.sample_rate))
        )
        print(f"cloning voice {voice.file}")
    text = "The museum opens at nine in the morning and closes at five in the afternoon."
    for cfg in (1.0, 1.3):
        speech = timed(
            f"TTS cfg={cfg}",
            lambda cfg=cfg: tts.synthesize(SynthesisRequest(text, voice=prompt, cfg_scale=cfg)),
        )
        rtf = timings[f"TTS cfg={cfg}"] / 1000 / max(speech.duration, 1e-6)
        print(f"  {speech.duration:.2f} s at {speech.sample_rate} Hz, RTF {rtf:.3f}")
    heard = timed(
        "STT", lambda: stt.transcribe(resample(speech, stt.sample_rate), TranscribeOptions(language="en"))
    )
    print(f"  heard: {heard.text!r}  WER {word_error_rate(text, heard.text):.2f}")
    reply = timed(
        "LLM", lambda: chat.chat([ChatMessage("user", "Name three colours.")], GenerationOptions(64, 0.0))
    )
    print(f"  reply: {reply!r}")
    print("OK: every production stage ran on the GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
