"""Time to first audio: streamed vs non-streamed /conversation, and the realtime WebSocket.

For five spoken requests of 2-6 s (questions spoken by the embedded Piper voice, generated here),
interleaved run by run and request by request:

1. **non-streamed /conversation**: request sent -> whole JSON answer (its audio fetched too);
2. **streamed /conversation** (`stream=true`): request sent -> first `audio` event (time to first
   audio), and -> `done`;
3. **WebSocket /ws/conversation**: the clip streamed in 20 ms PCM16 frames at real-time pace, then
   silence, as a microphone would. From the server's `speech_end` event to the first binary audio
   frame, and from the end of the speech in the clip (the last loud sample was sent) to it.

Each run starts a new conversation, so the context is the same every time. The streamed-over-
non-streamed ratio is taken on the requests whose reply has two or more sentences (a one-sentence
reply cannot be spoken before it is complete).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
from websockets.asyncio.client import connect

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.encode import encode_audio
from backend.app.core.values import SynthesisRequest
from backend.app.text.segment import split_sentences
from bench import machine
from bench.common import median, percentile, pyplot, table

FRAME_S = 0.02
REQUESTS = (
    "Can you tell me two interesting facts about the moon?",
    "What should I cook for dinner tonight with rice and eggs?",
    "How do I keep my houseplants healthy in winter?",
    "Why is the sky blue during the day?",
    "What are some good ways to fall asleep faster at night?",
)


def spoken_requests() -> list[tuple[str, bytes]]:
    """Each request spoken by the embedded Piper voice, as a 16 kHz WAV with a little silence."""
    from backend.app.backends import registry
    from backend.app.core.config import Settings

    voice = registry.load_tts(Settings(_env_file=None))
    clips = []
    for text in REQUESTS:
        speech = resample(voice.synthesize(SynthesisRequest(text)), 16000)
        pad = np.zeros(int(0.2 * 16000), dtype=np.float32)
        samples = np.concatenate([pad, speech.samples, pad])
        clips.append((text, encode_audio(type(speech)(samples, 16000), "wav")))
    return clips


# The goals from the realtime issue, for the report.
GOAL_FIRST_AUDIO_RATIO = 0.5
GOAL_FIRST_AUDIO_S = 1.2
GOAL_WS_S = 0.8


def sse_events(response: httpx.Response) -> list[tuple[float, str, dict[str, object]]]:
    """(arrival time, name, data) for each event of a streamed response, as it arrives."""
    events: list[tuple[float, str, dict[str, object]]] = []
    name = ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            events.append((time.perf_counter(), name, json.loads(line.split(":", 1)[1])))
    return events


def conversation_plain(client: httpx.Client, clip: bytes) -> dict[str, float]:
    started = time.perf_counter()
    response = client.post("/conversation", files={"audio_file": ("speech.wav", clip, "audio/wav")})
    response.raise_for_status()
    body = response.json()
    client.get(body["audio_url"]).raise_for_status()
    return {
        "total_s": time.perf_counter() - started,
        "server_total_ms": body["timings"]["total_ms"],
        "sentences": len(split_sentences(body["reply"])),
    }


def conversation_streamed(client: httpx.Client, clip: bytes) -> dict[str, float]:
    started = time.perf_counter()
    with client.stream(
        "POST",
        "/conversation",
        files={"audio_file": ("speech.wav", clip, "audio/wav")},
        data={"stream": "true"},
    ) as response:
        response.raise_for_status()
        events = sse_events(response)
    first_audio = next(t for t, name, _ in events if name == "audio")
    done = next(data for _, name, data in events if name == "done")
    timings = done["timings"]
    assert isinstance(timings, dict)
    return {
        "first_audio_s": first_audio - started,
        "total_s": events[-1][0] - started,
        "stt_ms": float(timings["stt_ms"]),
        "llm_first_token_ms": float(timings["llm_first_token_ms"]),
        "tts_first_audio_ms": float(timings["tts_first_audio_ms"]),
    }


async def websocket_turn(url: str, pcm: bytes, speech_end_offset_s: float) -> dict[str, float]:
    """Stream the clip at real-time pace, then silence, until the first reply audio arrives."""
    frame = int(16000 * FRAME_S) * 2
    silence = bytes(frame)
    marks: dict[str, float] = {}
    async with connect(url, max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        json.loads(await ws.recv())  # ready

        async def send_audio() -> None:
            started = time.perf_counter()
            marks["speech_over"] = started + speech_end_offset_s
            sent = 0
            while "first_audio" not in marks and sent < 600:  # at most 12 s
                chunk = pcm[sent * frame : (sent + 1) * frame] or silence
                await ws.send(chunk)
                sent += 1
                await asyncio.sleep(max(0.0, started + sent * FRAME_S - time.perf_counter()))

        async def receive() -> None:
            while True:
                message = await ws.recv()
                now = time.perf_counter()
                if isinstance(message, bytes):
                    marks.setdefault("first_audio", now)
                    return
                event = json.loads(message)
                if event["type"] == "speech_end":
                    marks["speech_end"] = now
                elif event["type"] == "error":
                    raise RuntimeError(event["message"])

        sender = asyncio.create_task(send_audio())
        await asyncio.wait_for(receive(), 60)
        await sender
        await ws.send(json.dumps({"type": "interrupt"}))
    return {
        "ws_from_speech_end_s": marks["first_audio"] - marks["speech_end"],
        "ws_from_speech_over_s": marks["first_audio"] - marks["speech_over"],
    }


def speech_end_offset(samples: np.ndarray, rate: int) -> float:
    loud = np.flatnonzero(np.abs(samples) >= 0.02)
    return float(loud[-1] + 1) / rate if loud.size else 0.0


def summary(values: list[float]) -> tuple[float, float]:
    """Median and p90."""
    return median(values), percentile(values, 90)


def measure(port: int, runs: int) -> tuple[list[dict[str, float]], list[float]]:
    """The runs' rows (one per request and run), and each request's speech length (seconds)."""
    clips = spoken_requests()
    url = f"ws://127.0.0.1:{port}/ws/conversation"
    rows: list[dict[str, float]] = []
    prepared = []
    for _, clip in clips:
        audio = decode_audio(clip, 16000)
        pcm = (np.clip(audio.samples, -1, 1) * 32767).astype("<i2").tobytes()
        prepared.append((clip, pcm, speech_end_offset(audio.samples, 16000), audio.duration))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
        clip, pcm, offset, _ = prepared[0]
        conversation_plain(client, clip)  # warm-up: first-request costs are not latency
        conversation_streamed(client, clip)
        asyncio.run(websocket_turn(url, pcm, offset))
        for run in range(runs):
            for index, (clip, pcm, offset, _) in enumerate(prepared):
                row: dict[str, float] = {"request": index, **conversation_plain(client, clip)}
                row |= {f"streamed_{k}": v for k, v in conversation_streamed(client, clip).items()}
                time.sleep(1)  # the previous reply may still be winding down
                row |= asyncio.run(websocket_turn(url, pcm, offset))
                time.sleep(1)
                rows.append(row)
                print(
                    f"latency run {run + 1} request {index + 1}: non-streamed {row['total_s']:.2f} s, "
                    f"first audio {row['streamed_first_audio_s']:.2f} s, WebSocket "
                    f"{row['ws_from_speech_over_s']:.2f} s after the speech",
                    flush=True,
                )
    return rows, [duration for *_, duration in prepared]


LABELS = [
    ("total_s", "non-streamed /conversation: request -> whole answer (+ audio fetched)"),
    ("streamed_first_audio_s", "streamed /conversation: request -> first audio"),
    ("streamed_total_s", "streamed /conversation: request -> done"),
    ("ws_from_speech_end_s", "WebSocket: `speech_end` event -> first audio frame"),
    ("ws_from_speech_over_s", "WebSocket: last speech sample sent -> first audio frame"),
]


def section(rows: list[dict[str, float]], durations: list[float], out: Path) -> list[str]:
    def col(key: str, subset: list[dict[str, float]] | None = None) -> tuple[float, float]:
        return summary([r[key] for r in (rows if subset is None else subset)])

    several = [r for r in rows if r["sentences"] >= 2]
    ratios = [r["streamed_first_audio_s"] / r["total_s"] for r in several]
    ratio = median(ratios) if ratios else float("nan")
    first, _ = col("streamed_first_audio_s")
    ws, ws_p90 = col("ws_from_speech_over_s")
    lines = [
        "## Streamed vs non-streamed: time to first audio",
        "",
        f"Input: {len(durations)} spoken requests of {min(durations):.1f}-{max(durations):.1f} s "
        f"(generated with the embedded voice: {'; '.join(REQUESTS)}). Median and p90 over "
        f"{len(rows)} turns ({len(rows) // len(durations)} runs of each request), interleaved.",
        "",
    ]
    lines += table(
        ["measurement", "median s", "p90 s"],
        [[label, *(f"{v:.2f}" for v in col(key))] for key, label in LABELS],
    )
    per_request = []
    for index, text in enumerate(REQUESTS):
        mine = [r for r in rows if r["request"] == index]
        per_request.append(
            [
                text,
                f"{durations[index]:.1f}",
                f"{median([r['sentences'] for r in mine]):.0f}",
                f"{col('total_s', mine)[0]:.2f}",
                f"{col('streamed_first_audio_s', mine)[0]:.2f}",
                f"{col('ws_from_speech_over_s', mine)[0]:.2f}",
            ]
        )
    lines += ["", "Per request (medians):", ""]
    lines += table(
        ["request", "speech s", "reply sentences", "non-streamed s", "streamed first audio s", "WebSocket s"],
        per_request,
    )
    lines += [
        "",
        f"Streamed first audio is **{ratio:.2f} x** the non-streamed whole answer (median over the "
        f"{len(several)} turns whose reply has two or more sentences). Inside the streamed turn "
        "(server timings, median ms): "
        + ", ".join(
            f"{name} {statistics.median(r[f'streamed_{name}'] for r in rows):.0f}"
            for name in ("stt_ms", "llm_first_token_ms", "tts_first_audio_ms")
        )
        + ".",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        f"| streamed first audio <= {GOAL_FIRST_AUDIO_RATIO} x non-streamed total (replies of 2+ "
        f"sentences) | {ratio:.2f} x | {'yes' if ratio <= GOAL_FIRST_AUDIO_RATIO else 'no'} |",
        f"| streamed first audio <= {GOAL_FIRST_AUDIO_S} s | {first:.2f} s | "
        f"{'yes' if first <= GOAL_FIRST_AUDIO_S else 'no'} |",
        f"| WebSocket last speech sample -> first audio <= {GOAL_WS_S} s (median) | {ws:.2f} s "
        f"(p90 {ws_p90:.2f} s) | {'yes' if ws <= GOAL_WS_S else 'no'} |",
        "",
        "The WebSocket's `speech_end` comes VAD_MIN_SILENCE_MS (500 ms) after the speech stops. The "
        "server transcribes during that silence and begins the reply on that transcript "
        "(WS_PREEMPTIVE_REPLIES), so the last row is what a user waits.",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
        "![latency](latency.png)",
        "",
    ]
    plot(rows, out / "latency.png")
    return lines


def plot(rows: list[dict[str, float]], path: Path) -> None:
    plt = pyplot()
    medians = [statistics.median(r[key] for r in rows) for key, _ in LABELS]
    p90s = [summary([r[key] for r in rows])[1] for key, _ in LABELS]
    fig, ax = plt.subplots(figsize=(9, 4))
    y = range(len(LABELS))
    ax.barh(y, medians, xerr=[[0] * len(medians), [p - m for p, m in zip(p90s, medians, strict=True)]])
    ax.set_yticks(list(y), [label.split(":")[0] + ":\n" + label.split(":", 1)[1] for _, label in LABELS])
    ax.invert_yaxis()
    ax.set_xlabel("seconds (median; whisker to p90)")
    ax.set_title("Time to the answer's first sound vs the whole answer")
    for i, m in enumerate(medians):
        ax.text(m, i, f" {m:.2f}", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
