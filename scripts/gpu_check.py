"""End-to-end check of the whole stack on a GPU: `python -m scripts.gpu_check`.

1. CUDA: torch sees the GPU; CTranslate2 (faster-whisper) sees it and finds cuBLAS 12.
2. The production models load through the server's own code: faster-whisper (STT_MODEL_NAME,
   default large-v3), the LLM (LLM_BACKEND/LLM_MODEL; the embedded SmolLM2 on the GPU when unset) and
   VibeVoice (TTS_MODEL_NAME, default vibevoice/VibeVoice-1.5B-hf), each timed.
3. Each stage alone: a sentence spoken in a cloned voice from VOICES_DIR at two cfg scales (real-time
   factor), transcribed back (word error rate), and a question answered.
4. One round trip through the app's routes: a spoken question to POST /conversation (transcript,
   reply, reply audio and the server's per-stage timings), then the same turn streamed (time to the
   first reply audio).
5. A two-voice dialogue script through POST /tts, each speaker mapped to its own library voice
   (VibeVoice speaks it in one generation), heard back through POST /stt (word error rate).
6. Word timings: POST /tts with `timestamps` (VibeVoice's words placed by the STT model's forced
   alignment) against the word timestamps POST /stt finds on the same audio (median |start
   difference|, bound 250 ms: one sentence).

Inside the GPU container: `docker compose run --rm voice python -m scripts.gpu_check`. Against a
server that is already running (the compose service, a Ray Serve deployment), without loading a
second copy of the models: `python -m scripts.gpu_check --url http://127.0.0.1:8000` (steps 1 and 4,
with /health showing where each model runs).

`--allow-cpu` runs the same steps on the configured models and any device (the embedded ones on a
CPU), to try the script where there is no GPU; the CUDA checks are left out.

Weights must already be in MODELS_DIR (or the Hugging Face cache) unless --allow-download is given.
Exit status: 0 all passed; 1 a check failed (the output says which); 2 something needed is missing
(no CUDA, no weights, no diffusers), with exactly what.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

SENTENCE = "The museum opens at nine in the morning and closes at five in the afternoon."
QUESTION = "What is the capital of France? Please answer in one short sentence."
MAX_WER = 0.3


class HTTPClient(Protocol):
    """What the round trip needs of a client: httpx.Client, or FastAPI's TestClient in-process."""

    def get(self, url: str, **kwargs: Any) -> Any: ...

    def post(self, url: str, **kwargs: Any) -> Any: ...

    def stream(self, method: str, url: str, **kwargs: Any) -> Any: ...


class Report:
    """Timings and failures, printed as they come and summed up at the end."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.failures: list[str] = []

    def time(self, label: str, fn: Callable[[], T], sync: Callable[[], None] = lambda: None) -> T:
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        self.timings[label] = (time.perf_counter() - start) * 1000
        print(f"{label}: {self.timings[label]:.0f} ms", flush=True)
        return result

    def check(self, ok: bool, what: str) -> None:
        print(f"  {'ok' if ok else 'FAILED'}: {what}", flush=True)
        if not ok:
            self.failures.append(what)

    def finish(self, production: bool) -> int:
        print("\ntimings (ms): " + json.dumps({k: round(v) for k, v in self.timings.items()}))
        if self.failures:
            print("FAILED: " + "; ".join(self.failures), file=sys.stderr)
            return 1
        print("OK: the whole stack ran on the GPU" if production else "OK: the whole stack ran")
        return 0


def check_cuda(report: Report) -> list[str]:
    """What is missing for a GPU run (nothing when CUDA is usable by torch and CTranslate2)."""
    missing = []
    try:
        import torch
    except ImportError:
        return ["torch"]
    if not torch.cuda.is_available():
        return ["a CUDA GPU visible to torch (torch.cuda.is_available() is False)"]
    free, total = torch.cuda.mem_get_info()
    print(
        f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
    )
    from backend.app.backends.cuda_libs import preload_cublas12

    loaded = preload_cublas12()
    print(
        "cuBLAS 12 for CTranslate2: " + (str(loaded[-1]) if loaded else "the system's (no wheel installed)")
    )
    import ctranslate2

    devices = ctranslate2.get_cuda_device_count()
    report.check(devices > 0, f"CTranslate2 {ctranslate2.__version__} sees {devices} CUDA device(s)")
    try:
        import diffusers  # noqa: F401  (VibeVoice's default noise scheduler)
    except ImportError:
        missing.append("diffusers (pip install -r requirements.txt)")
    return missing


def check_stages(report: Report, services: Any, voice_name: str, production: bool) -> None:
    """Each model on its own, through its backend (as the services call it)."""
    import torch

    from backend.app.audio.decode import decode_audio, resample
    from backend.app.core.values import ChatMessage, GenerationOptions, SynthesisRequest, TranscribeOptions
    from backend.app.text.wer import word_error_rate

    stt, chat, tts = services.stt.backend, services.chat.backend, services.tts.backend
    sync = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
    for name, model in (("STT", stt), ("LLM", chat), ("TTS", tts)):
        print(f"{name}: {model.info.model} on {model.info.device}")
        if production and name != "LLM":  # the LLM may be a remote server
            report.check("cuda" in model.info.device, f"{name} runs on CUDA")
    voice = services.tts.voices.by_name(voice_name) if voice_name else services.tts.voices.default
    prompt = None
    if voice and tts.supports_cloning:
        audio = decode_audio(voice.path.read_bytes(), tts.sample_rate)
        prompt = report.time("prepare voice", lambda: tts.prepare_voice(audio), sync)
        print(f"  cloning voice {voice.file}")
    speech = None
    for cfg in (1.0, 1.3):
        request = SynthesisRequest(SENTENCE, voice=prompt, cfg_scale=cfg)
        speech = report.time(f"TTS cfg={cfg}", lambda request=request: tts.synthesize(request), sync)
        rtf = report.timings[f"TTS cfg={cfg}"] / 1000 / max(speech.duration, 1e-6)
        print(f"  {speech.duration:.2f} s at {speech.sample_rate} Hz, real-time factor {rtf:.3f}")
    assert speech is not None
    clip = resample(speech, stt.sample_rate)
    heard = report.time("STT", lambda: stt.transcribe(clip, TranscribeOptions(language="en")), sync)
    wer = word_error_rate(SENTENCE, heard.text)
    print(f"  heard: {heard.text!r}")
    report.check(wer <= MAX_WER, f"TTS -> STT word error rate {wer:.2f} <= {MAX_WER}")
    question = [ChatMessage("user", "Name three colours.")]
    reply = report.time("LLM", lambda: chat.chat(question, GenerationOptions(64, 0.0)), sync)
    print(f"  reply: {reply!r}")
    report.check(bool(reply.strip()), "the LLM answered")


def check_round_trip(report: Report, client: HTTPClient, voice: str, production: bool) -> None:
    """A spoken question through the routes, whole and streamed, with the server's timings."""
    from backend.app.audio.decode import decode_audio
    from backend.app.text.wer import word_error_rate

    health = client.get("/health").json()
    for name in ("stt", "chat", "tts"):
        module = health["modules"][name]
        print(f"{name}: {module['model']} on {module['device']}")
        if production and name != "chat":
            report.check("cuda" in str(module["device"]), f"the server's {name} runs on CUDA")
    report.check(health["status"] == "ok", f"/health status {health['status']}")
    spoken = client.post("/tts", json={"text": QUESTION, **({"voice": voice} if voice else {})})
    report.check(spoken.status_code == 200, f"POST /tts answered {spoken.status_code}")
    if spoken.status_code != 200:
        return
    files = {"audio_file": ("question.wav", spoken.content, "audio/wav")}
    form = {"voice": voice} if voice else {}
    started = time.perf_counter()
    response = client.post("/conversation", files=files, data=form)
    report.timings["round trip (client)"] = (time.perf_counter() - started) * 1000
    report.check(response.status_code == 200, f"POST /conversation answered {response.status_code}")
    if response.status_code != 200:
        print(response.text, file=sys.stderr)
        return
    turn = response.json()
    wer = word_error_rate(QUESTION, turn["transcript"])
    print(f"  transcript: {turn['transcript']!r}\n  reply: {turn['reply']!r}")
    report.check(wer <= MAX_WER, f"transcript word error rate {wer:.2f} <= {MAX_WER}")
    report.check(bool(turn["reply"].strip()), "a reply")
    for key, value in turn["timings"].items():
        report.timings[f"server {key}"] = value
    print("  server timings (ms): " + json.dumps(turn["timings"]))
    audio = client.get(turn["audio_url"])
    duration = decode_audio(audio.content).duration if audio.status_code == 200 else 0.0
    report.check(duration > 0.3, f"reply audio {duration:.2f} s at {turn['audio_url']}")

    started = time.perf_counter()
    first_audio = None
    with client.stream("POST", "/conversation", files=files, data={**form, "stream": "true"}) as streamed:
        for line in streamed.iter_lines():
            if line == "event: audio" and first_audio is None:
                first_audio = (time.perf_counter() - started) * 1000
    report.check(first_audio is not None, "the streamed turn sent audio")
    if first_audio is not None:
        report.timings["streamed first audio (client)"] = first_audio
        print(f"  streamed: first reply audio after {first_audio:.0f} ms")


DIALOGUE = [
    ("Speaker 1", "Welcome back to the show. Today we talk about the night sky."),
    ("Speaker 2", "Thank you. I have been looking at the stars since I was a child."),
    ("Speaker 1", "What is the first thing people should look for?"),
]


def check_dialogue(report: Report, client: HTTPClient, production: bool) -> None:
    """A two-voice script through /tts, each speaker in a distinct library voice, heard back."""
    from backend.app.text.wer import word_error_rate

    voices = [v["file"] for v in client.get("/voices").json()["voices"] if not v["file"].startswith("piper:")]
    text = "\n".join(f"{label}: {line}" for label, line in DIALOGUE)
    body: dict[str, Any] = {"text": text}
    if len(voices) >= 2:
        body["speakers"] = {"1": voices[0], "2": voices[1]}
    started = time.perf_counter()
    spoken = client.post("/tts", json=body)
    report.timings["dialogue /tts (client)"] = (time.perf_counter() - started) * 1000
    report.check(spoken.status_code == 200, f"POST /tts with a dialogue script answered {spoken.status_code}")
    if spoken.status_code != 200:
        print(spoken.text, file=sys.stderr)
        return
    print(f"  speakers: {spoken.headers.get('x-speakers')}; segments: {spoken.headers.get('x-segments')}")
    report.check(spoken.headers.get("x-turns") == str(len(DIALOGUE)), "every turn of the script was spoken")
    if production:
        report.check(spoken.headers.get("x-shared-voice") == "false", "the two speakers have distinct voices")
    heard = client.post("/stt", files={"file": ("dialogue.wav", spoken.content, "audio/wav")})
    if heard.status_code == 200:
        wer = word_error_rate(" ".join(line for _, line in DIALOGUE), heard.json()["text"])
        print(f"  heard: {heard.json()['text']!r}")
        report.check(wer <= MAX_WER, f"dialogue word error rate {wer:.2f} <= {MAX_WER}")
    else:
        report.check(False, f"POST /stt answered {heard.status_code}")


WORDS_BOUND_S = 0.25
"""A smoke bound: one sentence, against /stt with its VAD on (measured 55-100 ms on a CPU)."""


def check_word_timings(report: Report, client: HTTPClient) -> None:
    """The synthesis's word times against the transcription's word timestamps of the same audio."""
    import base64
    from types import SimpleNamespace

    from backend.app.audio.types import SpokenWord
    from bench.common import median
    from bench.word_timings import differences

    timed = report.time(
        "TTS with word timings", lambda: client.post("/tts", json={"text": SENTENCE, "timestamps": True})
    )
    report.check(timed.status_code == 200, f"/tts timestamps answered {timed.status_code}")
    if timed.status_code != 200:
        return
    body = timed.json()
    audio = base64.b64decode(body["audio"])
    transcribed = client.post(
        "/stt", files={"file": ("speech.wav", audio, "audio/wav")}, data={"word_timestamps": "true"}
    )
    report.check(
        transcribed.status_code == 200, f"/stt with word timestamps answered {transcribed.status_code}"
    )
    found = transcribed.json()
    heard = [SimpleNamespace(**w) for s in found.get("segments", []) for w in s.get("words") or []]
    ours = [SpokenWord(w["word"], w["start"], w["end"]) for w in body["words"]]
    starts = differences(ours, heard)[0]
    error = median([abs(x) for x in starts]) if starts else float("inf")
    print(f"  {len(ours)} words, {len(starts)} paired; median |start difference| {error * 1000:.0f} ms")
    report.check(error <= WORDS_BOUND_S, f"word timings within {WORDS_BOUND_S * 1000:.0f} ms of the STT's")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.gpu_check", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--allow-download", action="store_true", help="let the hub download missing weights")
    parser.add_argument("--voice", default="", help="voice name from VOICES_DIR (default: the default voice)")
    parser.add_argument("--url", default="", help="check the server running at this address instead")
    parser.add_argument("--api-key", default=os.environ.get("API_KEY", ""), help="its API_KEY, if set")
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="a dry run without a GPU: the configured models on any device, no CUDA checks",
    )
    args = parser.parse_args(argv)
    report = Report()
    production = not args.allow_cpu

    if args.url:
        import httpx

        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        with httpx.Client(base_url=args.url, headers=headers, timeout=300) as client:
            try:
                check_round_trip(report, client, args.voice, production)
                check_dialogue(report, client, production)
                check_word_timings(report, client)
            except httpx.TransportError as e:
                print(f"cannot reach the server at {args.url}: {e}", file=sys.stderr)
                return 2
        return report.finish(production)

    if not args.allow_download:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if production:
        for name, value in (
            ("STT_MODEL_NAME", "large-v3"),
            ("TTS_MODEL_NAME", "vibevoice/VibeVoice-1.5B-hf"),
            ("STT_DEVICE", "cuda"),
            ("TTS_DEVICE", "cuda"),
            ("LLM_DEVICE", "cuda"),
        ):
            os.environ.setdefault(name, value)
    missing = check_cuda(report) if production else []
    if missing:
        print("cannot run the GPU check; missing: " + "; ".join(missing), file=sys.stderr)
        return 2

    from fastapi.testclient import TestClient

    from backend.app.container import build_services
    from backend.app.core.config import Settings
    from backend.app.core.errors import ModelLoadError
    from backend.app.core.logs import configure_logging
    from backend.app.main import create_app

    settings = Settings()
    configure_logging("info", "text")  # each model's load time, as the server logs it
    for noisy in ("httpx", "httpx2", "backend.app.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        services = report.time("load and warm up all models", lambda: build_services(settings))
    except ModelLoadError as e:
        print(f"cannot run the GPU check: {e}", file=sys.stderr)
        print(
            "weights: run once with --allow-download on a machine with network, or copy them into MODELS_DIR"
        )
        return 2
    try:
        check_stages(report, services, args.voice, production)
        key = settings.server.api_key.get_secret_value() if settings.server.api_key else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with TestClient(create_app(settings, services), headers=headers) as client:
            check_round_trip(report, client, args.voice, production)
            check_dialogue(report, client, production)
            check_word_timings(report, client)
    finally:
        services.shutdown()
    return report.finish(production)


if __name__ == "__main__":
    sys.exit(main())
