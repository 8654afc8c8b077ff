"""Turn-taking on /ws/conversation: turns ended by meaning (TURN_DETECTION=semantic) against turns
ended by silence (`silence`, VAD_MIN_SILENCE_MS), on the same audio, run by run.

1. **Pauses to think**: 24 requests spoken by the embedded Piper voice in two halves, with a pause
   of 0.5-1.2 s between them (seeded), streamed at real-time pace. A request is *cut off* when the
   server ends the turn (`speech_end`) before the second half has begun: the user would have been
   answered half-heard. Half of the pauses follow a word that leaves the sentence hanging ("a
   table for"), half follow a word that does not ("Can you tell me").
2. **Complete questions**: the five spoken requests of the latency section, from the last loud
   sample sent to the first binary reply frame (what a user waits), and to `speech_end`.

Each turn is a new conversation. Every figure is measured here, side by side, in one run.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect

from backend.app.audio.decode import decode_audio, resample
from backend.app.core.values import SynthesisRequest
from bench import machine
from bench.common import median, percentile, pyplot, table
from bench.latency import FRAME_S, speech_end_offset, spoken_requests

MODES = ("semantic", "silence")
PAUSED = (
    ("I would like to book a table for", "two people at eight tonight."),
    ("Can you remind me to call my", "sister tomorrow morning?"),
    ("What is the weather going to be like in London and", "in Paris this weekend?"),
    ("Play some music by the", "Beatles in the living room."),
    ("Set a timer for ten minutes because", "the pasta is almost ready."),
    ("Tell me a story about a dragon and", "a brave little girl."),
    ("How far is it from here to the", "nearest train station?"),
    ("Add eggs, milk and", "bread to my shopping list."),
    ("Which is bigger, the moon or", "the planet Mars?"),
    ("I need a recipe for a cake that is", "quick and easy to make."),
    ("Turn off the lights in the kitchen and", "lock the front door."),
    ("What time does the", "pharmacy on Main Street close today?"),
    ("Can you tell me", "what the capital of Australia is?"),
    ("I was wondering", "whether it will rain tomorrow."),
    ("Please send a message to", "my brother saying I am late."),
    ("How many minutes should I boil", "an egg for a soft yolk?"),
    ("Who painted", "the Mona Lisa?"),
    ("What is a good name", "for a small black cat?"),
    ("Can you explain how", "a rainbow is formed?"),
    ("Wake me up at seven", "on weekdays from now on."),
    ("Find me a cheap hotel", "near the airport for Friday night."),
    ("Read me the news", "about the football match yesterday."),
    ("Translate good morning", "into Spanish and French."),
    ("I think I would like", "a cup of green tea please."),
)
"""Two halves each; the first twelve pause after a word that leaves the sentence hanging."""
PAUSE_S = (0.5, 1.2)
GOAL_CUT = 0.10
GOAL_FIRST_AUDIO_S = 0.6


def paused_requests(seed: int = 7) -> list[tuple[str, np.ndarray, float, float]]:
    """(text, 16 kHz samples, where the second half starts (s), the last loud sample (s))."""
    from backend.app.backends import registry
    from backend.app.core.config import Settings

    voice = registry.load_tts(Settings(_env_file=None))
    rng = random.Random(seed)
    out = []
    for first, second in PAUSED:
        halves = [resample(voice.synthesize(SynthesisRequest(t)), 16000).samples for t in (first, second)]
        pause = np.zeros(int(rng.uniform(*PAUSE_S) * 16000), dtype=np.float32)
        lead = np.zeros(int(0.3 * 16000), dtype=np.float32)
        samples = np.concatenate([lead, halves[0], pause, halves[1]])
        second_at = (len(lead) + len(halves[0]) + len(pause)) / 16000
        out.append((f"{first} … {second}", samples, second_at, speech_end_offset(samples, 16000)))
    return out


async def stream_turn(url: str, samples: np.ndarray, mode: str, speech_over_s: float) -> dict[str, float]:
    """Stream at real-time pace, then silence, until the first reply audio (or 12 s of audio)."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    frame = int(16000 * FRAME_S) * 2
    marks: dict[str, float] = {}
    async with connect(url, max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "turn_detection": mode}))
        json.loads(await ws.recv())  # ready
        started = time.perf_counter()

        async def send_audio() -> None:
            sent = 0
            while "first_audio" not in marks and sent < 600:
                await ws.send(pcm[sent * frame : (sent + 1) * frame] or bytes(frame))
                sent += 1
                await asyncio.sleep(max(0.0, started + sent * FRAME_S - time.perf_counter()))

        async def receive() -> None:
            while True:
                message = await ws.recv()
                now = time.perf_counter() - started
                if isinstance(message, bytes):
                    marks.setdefault("first_audio", now)
                    return
                event = json.loads(message)
                if event["type"] == "speech_end":
                    marks.setdefault("speech_end", now)
                elif event["type"] == "error":
                    raise RuntimeError(event["message"])

        sender = asyncio.create_task(send_audio())
        await asyncio.wait_for(receive(), 60)
        await sender
        await ws.send(json.dumps({"type": "interrupt"}))
    return {
        "speech_end_s": marks.get("speech_end", float("nan")),
        "first_audio_s": marks["first_audio"],
        "end_after_speech_s": marks.get("speech_end", float("nan")) - speech_over_s,
        "first_audio_after_speech_s": marks["first_audio"] - speech_over_s,
    }


def measure(port: int, runs: int) -> list[dict[str, object]]:
    url = f"ws://127.0.0.1:{port}/ws/conversation"
    paused = paused_requests()
    questions = []
    for text, clip in spoken_requests():
        samples = decode_audio(clip, 16000).samples
        questions.append((text, samples, speech_end_offset(samples, 16000)))
    rows: list[dict[str, object]] = []
    for run in range(runs):
        for index, (text, samples, second_at, over) in enumerate(paused):
            for mode in MODES if (run + index) % 2 == 0 else MODES[::-1]:
                got = asyncio.run(stream_turn(url, samples, mode, over))
                cut = float(got["speech_end_s"]) < second_at + 0.1
                rows.append({"kind": "paused", "mode": mode, "text": text, "cut": cut, **got})
                print(f"turns {mode:8s} paused  cut={cut!s:5s} {text}", flush=True)
        for index, (text, samples, over) in enumerate(questions):
            for mode in MODES if (run + index) % 2 == 0 else MODES[::-1]:
                got = asyncio.run(stream_turn(url, samples, mode, over))
                rows.append({"kind": "question", "mode": mode, "text": text, "cut": False, **got})
                print(
                    f"turns {mode:8s} question {got['first_audio_after_speech_s']:.2f} s {text}", flush=True
                )
    return rows


def section(rows: list[dict[str, object]], runs: int, out: Path) -> list[str]:
    lines = [
        "## Turn-taking: ended by meaning vs by silence",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
        f"{len(PAUSED)} requests with a 0.5-1.2 s pause mid-sentence and 5 complete questions, each "
        f"streamed at real-time pace over /ws/conversation, {runs} run(s), both modes interleaved.",
        "",
    ]
    body = []
    summary: dict[str, tuple[float, float, float]] = {}
    for mode in MODES:
        paused = [r for r in rows if r["kind"] == "paused" and r["mode"] == mode]
        asked = [r for r in rows if r["kind"] == "question" and r["mode"] == mode]
        cut = sum(bool(r["cut"]) for r in paused) / max(1, len(paused))
        hanging = [r for i, r in enumerate(paused) if (i % len(PAUSED)) < len(PAUSED) // 2]
        cut_hanging = sum(bool(r["cut"]) for r in hanging) / max(1, len(hanging))
        first = [float(r["first_audio_after_speech_s"]) for r in asked]  # type: ignore[arg-type]
        ends = [float(r["end_after_speech_s"]) for r in asked]  # type: ignore[arg-type]
        summary[mode] = (cut, median(first), percentile(first, 90))
        body.append(
            [
                mode,
                f"{cut:.0%} ({sum(bool(r['cut']) for r in paused)}/{len(paused)})",
                f"{cut_hanging:.0%}",
                f"{median(ends):.2f} / {percentile(ends, 90):.2f}",
                f"{median(first):.2f} / {percentile(first, 90):.2f}",
            ]
        )
    lines += table(
        [
            "turns end by",
            "paused requests cut off",
            "… of those pausing on a hanging word",
            "complete questions: last speech → speech_end, median / p90 (s)",
            "last speech → first audio, median / p90 (s)",
        ],
        body,
    )
    semantic = summary["semantic"]
    lines += [
        "",
        f"Goals: cut off ≤ {GOAL_CUT:.0%} (semantic: {semantic[0]:.0%}, "
        f"{'met' if semantic[0] <= GOAL_CUT else 'not met'}); last speech → first audio ≤ "
        f"{GOAL_FIRST_AUDIO_S} s median (semantic: {semantic[1]:.2f} s, "
        f"{'met' if semantic[1] <= GOAL_FIRST_AUDIO_S else 'not met'}).",
        "",
        "![turns](turns.png)",
        "",
    ]
    plot(summary, out / "turns.png")
    return lines


def plot(summary: dict[str, tuple[float, float, float]], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    modes = list(summary)
    left.bar(modes, [summary[m][0] * 100 for m in modes], color=["#4c72b0", "#dd8452"])
    left.axhline(GOAL_CUT * 100, color="grey", linestyle="--", linewidth=1)
    left.set_ylabel("paused requests cut off (%)")
    right.bar(modes, [summary[m][1] for m in modes], color=["#4c72b0", "#dd8452"])
    right.errorbar(modes, [summary[m][1] for m in modes], yerr=[
        [0, 0], [summary[m][2] - summary[m][1] for m in modes]
    ], fmt="none", ecolor="black", capsize=4)  # fmt: skip
    right.axhline(GOAL_FIRST_AUDIO_S, color="grey", linestyle="--", linewidth=1)
    right.set_ylabel("last speech → first audio (s, median, p90 bar)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
