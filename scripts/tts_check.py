"""The TTS optimisation check, against a running server (`python -m scripts.tts_check [--url ...]`):
how a long text is segmented, what each request costs whole and streamed (time to the first audio),
and what the speaker cache did (hits and misses, read from /speaker_info before and after), each
voice asked for twice so that the second request shows the cache at work.

Exit status 0 when every request succeeded, 1 when one failed, 2 when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import httpx

LONG_TEXT = (
    "The history of the city begins with a small fishing village on the northern bank of the river. "
    "Over the centuries, merchants arrived from the south, bringing spices, cloth and new ideas. "
    "The village grew into a market town, and the market town into a city with walls and towers. "
    "Today the old quarter is a maze of narrow streets, where bakeries open before dawn and the smell "
    "of fresh bread drifts over the square. In the evening, people gather by the water to watch the "
    "boats come home, and the lights of the bridges are reflected in the slow, dark current. "
    "Visitors often say that the city feels both ancient and young, as if it were still deciding "
    "what it wants to become."
)


def _cache(http: httpx.Client) -> dict[str, Any]:
    return dict(http.get("/speaker_info").raise_for_status().json()["cache"])


def _voices(http: httpx.Client) -> tuple[list[str | None], bool]:
    info = http.get("/speaker_info").raise_for_status().json()
    clones = bool(info["supports_cloning"])
    files = [v["file"] for v in info["voices"] if not v["file"].startswith("piper:")]
    return (files[:2] if clones and files else [None]), clones


def measure(http: httpx.Client, text: str, voice: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"text": text, "format": "wav"}
    if voice:
        body["voice"] = voice
    began = time.perf_counter()
    whole = http.post("/tts", json=body).raise_for_status()
    whole_s = time.perf_counter() - began
    began = time.perf_counter()
    with http.stream("POST", "/tts", json={**body, "stream": True, "format": "pcm"}) as response:
        response.raise_for_status()
        first = None
        received = 0
        for chunk in response.iter_raw():
            if first is None and chunk:
                first = time.perf_counter() - began
            received += len(chunk)
    rate = int(whole.headers.get("X-Sample-Rate", "0")) or 1
    return {
        "segments": int(whole.headers.get("X-Segments", "0")),
        "voice": whole.headers.get("X-Voice") or "the engine's own",
        "audio_s": received / 2 / rate,
        "whole_s": whole_s,
        "first_audio_s": first or 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.tts_check", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default="http://localhost:8000", help="the server (default http://localhost:8000)"
    )
    parser.add_argument("--api-key", default=None, help="the server's API_KEY, when it has one")
    parser.add_argument(
        "--text", default=LONG_TEXT, help="the text to speak (default: 8 sentences, ~700 characters)"
    )
    args = parser.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with httpx.Client(base_url=args.url.rstrip("/"), timeout=600, headers=headers) as http:
        try:
            before = _cache(http)
            voices, clones = _voices(http)
        except httpx.HTTPError as e:
            print(f"cannot reach {args.url}: {e}. Start the server first (make run), or pass --url.")
            return 2
        print(f"text: {len(args.text)} characters; the engine {'clones' if clones else 'has its own'} voices")
        failed = 0
        for voice in voices:
            for attempt in (1, 2):
                try:
                    r = measure(http, args.text, voice)
                except httpx.HTTPError as e:
                    print(f"FAIL  voice {voice or 'default'} (request {attempt}): {e}")
                    failed += 1
                    continue
                print(
                    f"PASS  voice {r['voice']} (request {attempt}): {r['segments']} segments, "
                    f"{r['audio_s']:.1f} s of audio; whole {r['whole_s']:.2f} s "
                    f"(real-time factor {r['whole_s'] / max(r['audio_s'], 1e-6):.3f}), "
                    f"streamed first audio {r['first_audio_s']:.2f} s"
                )
        after = _cache(http)
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    print(
        f"speaker cache: {hits} hits, {misses} misses during the check; {after['size']}/{after['capacity']} "
        f"voices cached" + ("" if clones else " (unused: this engine does not clone voices)")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
