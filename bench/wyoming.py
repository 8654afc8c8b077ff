"""Side by side with wyoming-faster-whisper and wyoming-piper, protocol against protocol.

Both reference servers run from their own virtual environment (bench/.venv-wyoming, made by
`make bench` from bench/requirements-wyoming.txt) on the model files our server loads: the same
CTranslate2 Whisper directory (same compute type, beam size, threads and Silero VAD filter) and the
same Piper voice. Ours is the server's own Wyoming endpoint (WYOMING_URI). All three are driven by
one client, the `wyoming` library's, with the same events, for each input size, interleaved:
- STT: Transcribe + the same 16 kHz speech in 1024-sample chunks + AudioStop -> Transcript;
- TTS, whole: Synthesize -> AudioStop;
- TTS, streamed: SynthesizeStart + the text in word chunks + SynthesizeStop -> the first AudioChunk
  (how Home Assistant speaks an LLM reply while it is written).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from backend.app.audio.decode import decode_audio
from backend.app.backends import embedded, registry
from backend.app.core.config import Settings
from bench import machine
from bench.common import REPO, free_port, interleaved, median, pyplot, table
from bench.stages import TEXTS

VENV = REPO / "bench" / ".venv-wyoming"
RATE = 16_000


def available() -> str | None:
    """Why the comparison cannot run, or None."""
    if not (VENV / "bin" / "wyoming-faster-whisper").exists():
        return f"{VENV.relative_to(REPO)} is missing: `make bench` creates it"
    return None


def wyoming_versions() -> dict[str, str]:
    pip = VENV / "bin" / "python"
    code = (
        "from importlib.metadata import version as v; print(v('wyoming-faster-whisper'), v('wyoming-piper'))"
    )
    out = subprocess.run([str(pip), "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"wyoming-faster-whisper": out[0], "wyoming-piper": out[1], "wyoming": version("wyoming")}


def whisper_source(settings: Settings) -> str:
    name = settings.stt.model_name
    if name == "embedded":
        return str(embedded.whisper_tiny_en_dir())
    if name == "base-multilingual":
        return str(embedded.whisper_base_dir(settings.storage.models_dir))
    return name


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited at start-up (code {process.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start listening")


def start_servers(settings: Settings, device: str) -> tuple[dict[str, int], list[subprocess.Popen[bytes]]]:
    data = REPO / "bench" / "results" / ".wyoming"
    data.mkdir(parents=True, exist_ok=True)
    ports: dict[str, int] = {}
    processes: list[subprocess.Popen[bytes]] = []
    stt_port = free_port()
    compute = "float16" if device == "cuda" else "int8"
    command = [
        str(VENV / "bin" / "wyoming-faster-whisper"),
        "--uri", f"tcp://127.0.0.1:{stt_port}",
        "--model", whisper_source(settings),
        "--data-dir", str(settings.storage.models_dir), "--download-dir", str(settings.storage.models_dir),
        "--stt-library", "faster-whisper", "--device", device, "--compute-type", compute,
        "--beam-size", str(settings.stt.beam_size), "--cpu-threads", str(os.cpu_count() or 1),
        "--language", "en", "--vad-filter", "--local-files-only",
    ]  # fmt: skip
    processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    _wait_port(stt_port, processes[-1], "wyoming-faster-whisper")
    ports["stt"] = stt_port
    if registry.engine("tts", settings).name == "piper":
        tts_port = free_port()
        name = settings.tts.model_name
        voice = embedded.piper_voice_file() if name == "embedded" else Path(name)
        command = [
            str(VENV / "bin" / "wyoming-piper"),
            "--uri", f"tcp://127.0.0.1:{tts_port}", "--voice", str(voice),
            "--data-dir", str(data), "--local-files-only",
        ]  # fmt: skip
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_port(tts_port, processes[-1], "wyoming-piper")
        ports["tts"] = tts_port
    return ports, processes


async def _wyoming_stt(port: int, pcm: bytes) -> str:
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient

    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
        for i in range(0, len(pcm), 2048):
            await client.write_event(
                AudioChunk(rate=RATE, width=2, channels=1, audio=pcm[i : i + 2048]).event()
            )
        await client.write_event(AudioStop().event())
        while True:
            event = await client.read_event()
            if event is None:
                raise RuntimeError(f"the Wyoming server on port {port} closed the connection")
            if event.type == "error":
                raise RuntimeError(f"the Wyoming server on port {port} answered {event.data}")
            if Transcript.is_type(event.type):
                return str(Transcript.from_event(event).text)


async def _wyoming_tts(port: int, text: str, streamed: bool) -> float:
    """Seconds of audio received for a whole `synthesize`; with `streamed`, the text is sent as a
    stream of word chunks and this stops at the first audio chunk."""
    from wyoming.audio import AudioChunk, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

    received = 0.0
    async with AsyncTcpClient("127.0.0.1", port) as client:
        if streamed:
            await client.write_event(SynthesizeStart().event())
            for word in text.split(" "):
                await client.write_event(SynthesizeChunk(text=word + " ").event())
            await client.write_event(Synthesize(text=text).event())
            await client.write_event(SynthesizeStop().event())
        else:
            await client.write_event(Synthesize(text=text).event())
        while True:
            event = await client.read_event()
            if event is None:
                raise RuntimeError(f"the Wyoming server on port {port} closed the connection")
            if event.type == "error":
                raise RuntimeError(f"the Wyoming server on port {port} answered {event.data}")
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                received += len(chunk.audio) / (chunk.width * chunk.channels * chunk.rate)
                if streamed:
                    return received
            elif AudioStop.is_type(event.type):
                return received


def measure(
    http: httpx.Client, ours: int, settings: Settings, repeats: int, device: str
) -> list[dict[str, Any]]:
    """`ours`: our server's Wyoming port; `http` its HTTP side (only to make the test speech)."""
    ports, processes = start_servers(settings, device)
    rows: list[dict[str, Any]] = []
    try:
        for size, text in TEXTS.items():
            wav = http.post("/tts", json={"text": text, "format": "wav"}).content
            speech = decode_audio(wav, RATE)
            pcm = (np.clip(speech.samples, -1, 1) * 32767).astype("<i2").tobytes()
            sides: dict[str, Any] = {
                "ours_stt": lambda p=pcm: asyncio.run(_wyoming_stt(ours, p)),
                "theirs_stt": lambda p=pcm: asyncio.run(_wyoming_stt(ports["stt"], p)),
            }
            if "tts" in ports:
                sides |= {
                    "ours_tts": lambda t=text: asyncio.run(_wyoming_tts(ours, t, False)),
                    "theirs_tts": lambda t=text: asyncio.run(_wyoming_tts(ports["tts"], t, False)),
                    "ours_first": lambda t=text: asyncio.run(_wyoming_tts(ours, t, True)),
                    "theirs_first": lambda t=text: asyncio.run(_wyoming_tts(ports["tts"], t, True)),
                }
            # (the warm-up also has the Wyoming STT server load its model on its first request)
            times = interleaved(sides, ("stt", "tts", "first"), repeats)
            row: dict[str, Any] = {"size": size, "audio_s": round(speech.duration, 1)}
            row |= {key: round(median(values), 1) for key, values in times.items()}
            rows.append(row)
            print(f"wyoming {size}: {row}", flush=True)
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
    return rows


def section(rows: list[dict[str, Any]], settings: Settings, repeats: int, out: Path) -> list[str]:
    versions = wyoming_versions()
    lines = [
        "## Against wyoming-faster-whisper and wyoming-piper",
        "",
        f"Same machine, same audio, same model files, run side by side (interleaved, median of {repeats}): "
        f"wyoming-faster-whisper {versions['wyoming-faster-whisper']} and wyoming-piper "
        f"{versions['wyoming-piper']} vs this server's own Wyoming endpoint, one client (the `wyoming` "
        "library's) sending the same events to each over TCP. STT model "
        f"`{settings.stt.model_name}`, beam {settings.stt.beam_size}, Silero VAD filter on both sides. "
        "**Goal: ratio (ours / theirs) <= 1.0.**",
        "",
    ]
    headers = ["input", "speech s", "our STT ms", "their STT ms", "STT ratio"]
    has_tts = "ours_tts" in rows[0]
    if has_tts:
        headers += [
            "our TTS ms",
            "their TTS ms",
            "TTS ratio",
            "our streamed first audio ms",
            "their streamed first audio ms",
            "ratio",
        ]
    cells = []
    for r in rows:
        cell = [
            r["size"],
            r["audio_s"],
            r["ours_stt"],
            r["theirs_stt"],
            f"**{r['ours_stt'] / r['theirs_stt']:.3f}**",
        ]
        if has_tts:
            cell += [
                r["ours_tts"], r["theirs_tts"], f"**{r['ours_tts'] / r['theirs_tts']:.3f}**",
                r["ours_first"], r["theirs_first"], f"**{r['ours_first'] / r['theirs_first']:.3f}**",
            ]  # fmt: skip
        cells.append(cell)
    lines += table(headers, cells)
    if not has_tts:
        lines += ["", "TTS: no Wyoming server runs this engine (wyoming-piper is Piper only); not compared."]
    lines += [
        "",
        "STT: from the first event sent to the transcript. TTS: a whole `synthesize` to its "
        "`audio-stop`. Streamed: `synthesize-start`, the text in word chunks, `synthesize-stop`, to "
        "the first `audio-chunk` (both speak a stream sentence by sentence). wyoming-faster-whisper "
        "writes the audio to a WAV file that faster-whisper reads; we hand the samples over in memory.",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
        "![wyoming](wyoming.png)",
        "",
    ]
    plot(rows, out / "wyoming.png")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    sizes = [r["size"] for r in rows]
    pairs = [("stt", "STT")] + (
        [("tts", "TTS whole"), ("first", "TTS streamed: first audio")] if "ours_tts" in rows[0] else []
    )
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], pairs, strict=True):
        xs = range(len(sizes))
        ax.bar([x - 0.2 for x in xs], [r[f"ours_{key}"] for r in rows], 0.4, label="ours (Wyoming)")
        ax.bar([x + 0.2 for x in xs], [r[f"theirs_{key}"] for r in rows], 0.4, label="wyoming-*")
        ax.set_xticks(list(xs), sizes)
        ax.set_ylabel("ms (median)")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
