"""Per-stage latency (STT, LLM, TTS x short/medium/long) and server-over-raw-library ratios.

Run with `make bench` (or `.venv/bin/python -m bench.stages`). In one run it:
1. loads the embedded models in this process (the "raw library" side) and starts the real server
   (`python -m backend.app`) on a free localhost port;
2. for /stt and /tts, times the raw library call and the same work through the server, interleaved
   (raw, server, raw, server, ...) so that both sides see the same machine state;
3. times each stage on short (< 20 words), medium (20-100) and long (> 100) inputs;
4. writes bench/results/stages.md and bench/results/stages.png.

Raw STT is `WhisperModel.transcribe` on an already decoded 16 kHz array (the least the library must
do); faster-whisper's own file path (`transcribe(file)`, with its decode) is shown for reference.
Raw TTS is `PiperVoice.synthesize` to a float array. Server times are whole HTTP round trips.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.encode import encode_audio
from backend.app.backends import embedded
from backend.app.backends.piper import PiperBackend
from backend.app.backends.protocols import (
    ChatMessage,
    GenerationOptions,
    SynthesisRequest,
)
from backend.app.backends.transformers_llm import TransformersChatBackend
from backend.app.backends.whisper import WhisperBackend
from backend.app.core.config import Settings

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

TEXTS = {
    "short": "Turn off the lights in the living room, please.",
    "medium": (
        "Tomorrow I have a meeting with the design team at ten, then lunch with Sarah near the "
        "station. After that I need to pick up the dry cleaning and buy groceries for the weekend, "
        "so remind me to leave the office early."
    ),
    "long": (
        "The history of the city begins with a small fishing village on the northern bank of the "
        "river. Over the centuries, merchants arrived from the south, bringing spices, cloth and "
        "new ideas, and the village grew into a busy market town. A stone bridge was built to "
        "connect the two banks, and around it the first guild halls appeared. During the industrial "
        "period, factories lined the water, and the population tripled in a single generation. "
        "Today most of the old warehouses have become apartments, galleries and restaurants, and "
        "the river, once crowded with barges, is used mostly by rowing clubs and tourist boats. "
        "Visitors can still walk across the original bridge and see the marks left by the floods "
        "of past centuries on its pillars."
    ),
}


def timed(fn: Callable[[], object]) -> float:
    # Let the other side's idle worker threads stop spinning (OpenMP keeps them busy ~200 ms after a
    # parallel region) so that each measured call starts on a quiet machine.
    time.sleep(0.3)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples), 1)


def start_server(port: int, **overrides: str) -> subprocess.Popen[bytes]:
    """Start `python -m backend.app` on `port` (extra settings as `overrides`) and wait until ready."""
    env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", OUTPUTS_DIR=str(RESULTS / ".outputs"))
    env.update(overrides)
    process = subprocess.Popen(
        [sys.executable, "-m", "backend.app", "--log-level", "warning"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the server failed to start; run `make run` to see why")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not become ready")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median)")
    args = parser.parse_args()
    repeats = args.repeats
    settings = Settings()
    RESULTS.mkdir(parents=True, exist_ok=True)

    print("loading the raw models ...", flush=True)
    whisper = WhisperBackend(settings.stt_model_name, settings.models_dir, beam_size=settings.stt_beam_size)
    piper = PiperBackend(settings.tts_model_name)
    llm = TransformersChatBackend(settings.llm_model, settings.models_dir)
    # The raw side calls the libraries themselves, as a user of them would.
    from faster_whisper import WhisperModel
    from piper import PiperVoice

    library_model: WhisperModel = whisper._model
    raw_voice = PiperVoice.load(
        embedded.piper_voice_file() if settings.tts_model_name == "embedded" else settings.tts_model_name
    )

    print("starting the server ...", flush=True)
    port = free_port()
    server = start_server(port)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)

    rows: list[dict[str, object]] = []
    ratios: list[dict[str, object]] = []
    try:
        for size, text in TEXTS.items():
            words = len(text.split())
            speech = piper.synthesize(SynthesisRequest(text))
            wav = encode_audio(speech, "wav")
            audio16 = resample(decode_audio(wav), 16_000)
            messages = [ChatMessage("system", settings.system_prompt), ChatMessage("user", text)]
            gen = GenerationOptions(settings.llm_max_tokens, 0.0)

            def raw_stt(samples: object = audio16.samples) -> object:
                segments, _ = library_model.transcribe(
                    samples, language="en", beam_size=settings.stt_beam_size, vad_filter=True
                )
                return list(segments)

            def library_stt(wav: bytes = wav) -> object:
                segments, _ = library_model.transcribe(
                    io.BytesIO(wav), language="en", beam_size=settings.stt_beam_size, vad_filter=True
                )
                return list(segments)

            def server_stt(wav: bytes = wav) -> object:
                response = http.post(
                    "/stt", files={"file": ("a.wav", wav, "audio/wav")}, data={"language": "en"}
                )
                response.raise_for_status()
                return response

            def raw_tts(text: str = text) -> object:
                return [chunk.audio_float_array for chunk in raw_voice.synthesize(text)]

            def server_tts(text: str = text) -> object:
                response = http.post("/tts", json={"text": text})
                response.raise_for_status()
                return response

            for warm in (raw_stt, server_stt, raw_tts, server_tts):
                warm()
            times: dict[str, list[float]] = {
                k: [] for k in ("raw_stt", "lib_stt", "srv_stt", "raw_tts", "srv_tts")
            }
            for i in range(repeats):
                # Alternate which side goes first, so neither always follows the other.
                stt_order = [("raw_stt", raw_stt), ("srv_stt", server_stt), ("lib_stt", library_stt)]
                tts_order = [("raw_tts", raw_tts), ("srv_tts", server_tts)]
                for key, fn in stt_order if i % 2 == 0 else stt_order[::-1]:
                    times[key].append(timed(fn))
                for key, fn in tts_order if i % 2 == 0 else tts_order[::-1]:
                    times[key].append(timed(fn))
            llm_times = [timed(lambda m=messages, g=gen: llm.chat(m, g)) for _ in range(max(1, repeats // 2))]
            reply_tokens = len(llm._tokenizer.encode(llm.chat(messages, gen)))
            med = {k: median_ms(v) for k, v in times.items()}
            rows.append(
                {
                    "size": size,
                    "words": words,
                    "audio_s": round(speech.duration, 1),
                    "stt_ms": med["srv_stt"],
                    "stt_rtf": round(med["srv_stt"] / 1000 / speech.duration, 3),
                    "llm_ms": median_ms(llm_times),
                    "llm_tokens": reply_tokens,
                    "tts_ms": med["srv_tts"],
                    "tts_rtf": round(med["srv_tts"] / 1000 / speech.duration, 3),
                }
            )
            ratios.append(
                {
                    "size": size,
                    "raw_stt": med["raw_stt"],
                    "lib_stt": med["lib_stt"],
                    "srv_stt": med["srv_stt"],
                    "stt_ratio": round(med["srv_stt"] / med["raw_stt"], 3),
                    "raw_tts": med["raw_tts"],
                    "srv_tts": med["srv_tts"],
                    "tts_ratio": round(med["srv_tts"] / med["raw_tts"], 3),
                }
            )
            print(rows[-1], ratios[-1], flush=True)
    finally:
        http.close()
        server.terminate()
        server.wait(timeout=30)

    write_report(rows, ratios, repeats, settings)
    return 0


def write_report(
    rows: list[dict[str, object]], ratios: list[dict[str, object]], repeats: int, settings: Settings
) -> None:
    lines = [
        "# Per-stage latency and server overhead",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        f"Models: STT `{settings.stt_model_name}` (beam {settings.stt_beam_size}), "
        f"LLM `{settings.llm_backend}` (max {settings.llm_max_tokens} tokens, greedy), "
        f"TTS `{settings.tts_model_name}`. Median of {repeats} runs; written by `bench/stages.py`.",
        "",
        "## Stage latency through the server (HTTP round trip)",
        "",
        "| input | words | speech (s) | STT ms | STT RTF | LLM ms | LLM reply tokens | TTS ms | TTS RTF |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['words']} | {r['audio_s']} | {r['stt_ms']} | {r['stt_rtf']} | "
            f"{r['llm_ms']} | {r['llm_tokens']} | {r['tts_ms']} | {r['tts_rtf']} |"
        )
    lines += [
        "",
        "STT input is the TTS rendering of the same text. LLM time is the in-process model "
        "(the server adds the same HTTP overhead as for the other stages).",
        "",
        "## Server over raw library (same run, interleaved)",
        "",
        "| input | raw STT ms | faster-whisper file path ms | server /stt ms | /stt ratio | "
        "raw TTS ms | server /tts ms | /tts ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ratios:
        lines.append(
            f"| {r['size']} | {r['raw_stt']} | {r['lib_stt']} | {r['srv_stt']} | **{r['stt_ratio']}** | "
            f"{r['raw_tts']} | {r['srv_tts']} | **{r['tts_ratio']}** |"
        )
    lines += [
        "",
        "Raw STT: `transcribe` on a decoded 16 kHz array. Server /stt: upload of the WAV, decode "
        "(PyAV), resample (soxr), transcribe, JSON. Raw TTS: `PiperVoice.synthesize` to float arrays. Server "
        "/tts: text cleaning, segmentation (medium and long texts are over SEGMENT_THRESHOLD_CHARS, "
        "so the server makes several synthesis calls and inserts silences), synthesis, WAV encoding "
        "and the HTTP response. Each timed call starts after a 0.3 s pause; sides alternate order. "
        "Goal: ratio <= 1.05.",
        "",
    ]
    (RESULTS / "stages.md").write_text("\n".join(lines))
    plot(rows, ratios)
    print("\n".join(lines))


def plot(rows: list[dict[str, object]], ratios: list[dict[str, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [str(r["size"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.27
    xs = range(len(sizes))
    for offset, key, label in ((-width, "stt_ms", "STT"), (0, "llm_ms", "LLM"), (width, "tts_ms", "TTS")):
        left.bar([x + offset for x in xs], [float(r[key]) for r in rows], width, label=label)  # type: ignore[arg-type]
    left.set_xticks(list(xs), sizes)
    left.set_ylabel("ms (median)")
    left.set_title("Stage latency through the server")
    left.legend()
    right.bar([x - width / 2 for x in xs], [float(r["stt_ratio"]) for r in ratios], width, label="/stt")  # type: ignore[arg-type]
    right.bar([x + width / 2 for x in xs], [float(r["tts_ratio"]) for r in ratios], width, label="/tts")  # type: ignore[arg-type]
    right.axhline(1.05, color="red", linestyle="--", linewidth=1, label="goal 1.05")
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set_xticks(list(xs), sizes)
    right.set_ylim(0.8, max(1.3, *(float(r["stt_ratio"]) for r in ratios)) + 0.05)  # type: ignore[arg-type]
    right.set_title("Server time / raw library time")
    right.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "stages.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
