"""OpenAI's Realtime protocol against our own: end of speech -> first reply audio, same turns.

For the five spoken requests of the latency section (2-6 s, spoken by the embedded Piper voice),
interleaved run by run and request by request, each clip is streamed as a microphone would (20 ms
frames at real-time pace, then silence) over:

1. **/ws/conversation** (our protocol): 16 kHz binary PCM16 frames; the clock stops at the first
   binary reply frame;
2. **/v1/realtime** (OpenAI's protocol, through the `openai` SDK's `client.realtime.connect`): the
   same audio at 24 kHz in base64 `input_audio_buffer.append` events, server VAD; the clock stops
   at the first `response.output_audio.delta`.

Both are timed from the last loud sample sent (what a user waits), and from the server's own
end-of-turn event (`speech_end` / `input_audio_buffer.speech_stopped`). Each turn is a new
conversation, so the context is the same every time. The goal: the Realtime protocol within 5 % of
our own (the same session core underneath; the difference is the protocol's own cost: base64,
JSON, resampling to 24 kHz).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import numpy as np
from openai import AsyncOpenAI

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.encode import to_pcm16
from bench import machine
from bench.common import median, percentile, pyplot, table
from bench.latency import FRAME_S, REQUESTS, speech_end_offset, spoken_requests, websocket_turn

GOAL_RATIO = 1.05
RATE = 24000
MAX_FRAMES = 600  # 12 s of audio at most per turn


async def realtime_turn(base: str, pcm: bytes, speech_end_offset_s: float) -> dict[str, float]:
    """One turn over /v1/realtime with the SDK: real-time pace, then silence, to the first audio."""
    client = AsyncOpenAI(base_url=f"{base}/v1", api_key="bench", max_retries=0)
    frame = int(RATE * FRAME_S) * 2
    silence = base64.b64encode(bytes(frame)).decode()
    marks: dict[str, float] = {}
    async with client.realtime.connect(model="gpt-realtime") as connection:
        while json.loads(await connection.recv_bytes())["type"] != "conversation.created":
            pass

        async def send_audio() -> None:
            started = time.perf_counter()
            marks["speech_over"] = started + speech_end_offset_s
            sent = 0
            while "first_audio" not in marks and sent < MAX_FRAMES:
                chunk = pcm[sent * frame : (sent + 1) * frame]
                await connection.input_audio_buffer.append(
                    audio=base64.b64encode(chunk).decode() if chunk else silence
                )
                sent += 1
                await asyncio.sleep(max(0.0, started + sent * FRAME_S - time.perf_counter()))

        async def receive() -> None:
            while True:
                event = json.loads(await connection.recv_bytes())
                now = time.perf_counter()
                if event["type"] == "response.output_audio.delta":
                    marks.setdefault("first_audio", now)
                    return
                if event["type"] == "input_audio_buffer.speech_stopped":
                    marks["speech_end"] = now
                elif event["type"] == "error":
                    raise RuntimeError(event["error"]["message"])

        sender = asyncio.create_task(send_audio())
        await asyncio.wait_for(receive(), 60)
        await sender
        await connection.response.cancel()
    return {
        "rt_from_speech_end_s": marks["first_audio"] - marks["speech_end"],
        "rt_from_speech_over_s": marks["first_audio"] - marks["speech_over"],
    }


def measure(port: int, runs: int) -> tuple[list[dict[str, float]], list[float]]:
    """One row per request and run (both protocols), and each request's length in seconds."""
    base = f"http://127.0.0.1:{port}"
    url = f"ws://127.0.0.1:{port}/ws/conversation"
    prepared = []
    for _, clip in spoken_requests():
        audio = decode_audio(clip, 16000)
        offset = speech_end_offset(audio.samples, 16000)
        pcm16 = to_pcm16(audio)
        pcm24 = to_pcm16(resample(audio, RATE))
        prepared.append((pcm16, pcm24, offset, audio.duration))
    pcm16, pcm24, offset, _ = prepared[0]
    asyncio.run(websocket_turn(url, pcm16, offset))  # warm-up: first-request costs are not latency
    asyncio.run(realtime_turn(base, pcm24, offset))
    rows: list[dict[str, float]] = []
    for run in range(runs):
        for index, (pcm16, pcm24, offset, _) in enumerate(prepared):
            # Alternate which goes first, so neither always follows the other's wind-down.
            order = (0, 1) if (run + index) % 2 == 0 else (1, 0)
            row: dict[str, float] = {"request": index}
            for which in order:
                time.sleep(1)  # the previous reply winds down (cancelled) before the next turn
                if which == 0:
                    row |= asyncio.run(websocket_turn(url, pcm16, offset))
                else:
                    row |= asyncio.run(realtime_turn(base, pcm24, offset))
            rows.append(row)
            print(
                f"realtime run {run + 1} request {index + 1}: /ws/conversation "
                f"{row['ws_from_speech_over_s']:.2f} s, /v1/realtime {row['rt_from_speech_over_s']:.2f} s "
                "after the speech",
                flush=True,
            )
    return rows, [duration for *_, duration in prepared]


LABELS = [
    ("ws_from_speech_over_s", "/ws/conversation: last speech sample sent -> first audio frame"),
    ("rt_from_speech_over_s", "/v1/realtime: last speech sample sent -> first output_audio.delta"),
    ("ws_from_speech_end_s", "/ws/conversation: `speech_end` -> first audio frame"),
    ("rt_from_speech_end_s", "/v1/realtime: `speech_stopped` -> first output_audio.delta"),
]


def section(rows: list[dict[str, float]], durations: list[float], out: Path) -> list[str]:
    def col(key: str, subset: list[dict[str, float]] | None = None) -> tuple[float, float]:
        values = [r[key] for r in (rows if subset is None else subset)]
        return median(values), percentile(values, 90)

    ratios = [r["rt_from_speech_over_s"] / r["ws_from_speech_over_s"] for r in rows]
    ratio = median(ratios)
    lines = [
        "## OpenAI's Realtime protocol vs our own WebSocket: end of speech -> first audio",
        "",
        f"Input: the latency section's {len(durations)} spoken requests "
        f"({min(durations):.1f}-{max(durations):.1f} s), streamed at real-time pace over each protocol "
        f"in turn (order alternating), {len(rows)} turns each ({len(rows) // len(durations)} runs of "
        "each request). /v1/realtime is driven by the `openai` SDK (24 kHz base64 PCM16, server VAD).",
        "",
    ]
    lines += table(
        ["measurement", "median s", "p90 s"],
        [[label, *(f"{v:.2f}" for v in col(key))] for key, label in LABELS],
    )
    per_request = []
    for index, text in enumerate(REQUESTS):
        mine = [r for r in rows if r["request"] == index]
        ws, rt = col("ws_from_speech_over_s", mine)[0], col("rt_from_speech_over_s", mine)[0]
        per_request.append([text, f"{durations[index]:.1f}", f"{ws:.2f}", f"{rt:.2f}", f"{rt / ws:.2f}"])
    lines += ["", "Per request (medians):", ""]
    lines += table(["request", "speech s", "/ws/conversation s", "/v1/realtime s", "ratio"], per_request)
    lines += [
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        f"| /v1/realtime within {round((GOAL_RATIO - 1) * 100)} % of /ws/conversation (median of the "
        f"per-turn ratios, last speech sample -> first audio) | {ratio:.3f} x | "
        f"{'yes' if ratio <= GOAL_RATIO else 'no'} |",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
        "![realtime](realtime.png)",
        "",
    ]
    plot(rows, out / "realtime.png")
    return lines


def plot(rows: list[dict[str, float]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    data = [np.array([r[key] for r in rows]) for key, _ in LABELS]
    ax.boxplot(
        data,
        orientation="horizontal",
        tick_labels=[label.split(":")[0] + "\n" + label.split(": ")[1] for _, label in LABELS],
    )
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title("End of speech -> first reply audio (same turns)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
