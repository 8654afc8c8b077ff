"""Spoken turns that call a server-side tool, against the same server's plain turns: end of speech to
first audio, and to the end of the turn.

The server runs the default models with an MCP server on stdio (`bench/mcp_home.py`: weather,
lights, a timer; each answers at once, so what is measured is the server, not a tool). Each
request is spoken by the server's own voice (/tts) beforehand, then sent whole to the streamed
/conversation: "end of speech" is the moment the request is sent, first audio the first `audio`
event. Two servers in turn: with TOOL_ACKNOWLEDGEMENT ("One moment, please.", spoken as soon as a
reply begins a tool call before saying anything) and without it, so the acknowledgement's effect is measured
side by side. A tool turn counts when the reply called a tool (`done.tools`); a plain turn when it
called none.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx

from bench import machine
from bench.common import free_port, median, percentile, start_server, stop_server, table

TOOL_REQUESTS = (
    "What's the weather like in Chicago right now?",
    "Turn on the light in the kitchen, please.",
    "Set a timer for ten minutes.",
    "How warm is it in Madrid today?",
    "Switch off the bedroom light.",
    "Start a timer for three minutes for the eggs.",
)
PLAIN_REQUESTS = (
    "Tell me a joke about cats.",
    "Who wrote Romeo and Juliet?",
    "How many legs does a spider have?",
    "Say good night to me.",
)
SERVERS = {"home": {"command": sys.executable, "args": ["-m", "bench.mcp_home"]}}


def _turn(http: httpx.Client, clip: bytes) -> dict[str, Any]:
    """One streamed spoken turn: seconds to the first audio and to the end, and the tools called."""
    started = time.perf_counter()
    first = None
    done: dict[str, Any] = {}
    files = {"audio_file": ("ask.wav", clip, "audio/wav")}
    with http.stream("POST", "/conversation", files=files, data={"stream": "true"}) as response:
        response.raise_for_status()
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "audio" and first is None:
                    first = time.perf_counter() - started
                elif event == "done":
                    done = json.loads(line[6:])
    total = time.perf_counter() - started
    return {
        "first_s": first if first is not None else total,
        "total_s": total,
        "tools": done.get("tools", []),
    }


def measure(repeats: int = 2) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per server (with and without the acknowledgement): the tool turns and the plain turns."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for label, ack in (("acknowledged", "One moment, please."), ("silent until the answer", "")):
        port = free_port()
        process = start_server(port, MCP_SERVERS=json.dumps(SERVERS), TOOL_ACKNOWLEDGEMENT=ack)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
                for _ in range(30):  # the MCP server's tools are listed in the background
                    if http.get("/health").json().get("tools", {}).get("home", {}).get("tools"):
                        break
                    time.sleep(0.5)
                clips = {
                    text: http.post("/tts", json={"text": text}).content
                    for text in TOOL_REQUESTS + PLAIN_REQUESTS
                }
                _turn(http, clips[PLAIN_REQUESTS[0]])  # warm-up
                runs: dict[str, list[dict[str, Any]]] = {"tool": [], "plain": []}
                for _ in range(repeats):
                    for text, clip in clips.items():
                        turn = _turn(http, clip)
                        runs["tool" if turn["tools"] else "plain"].append({**turn, "text": text})
                        print(
                            f"tool turns ({label}): {text!r} first audio {turn['first_s']:.2f} s, "
                            f"end {turn['total_s']:.2f} s, tools {[t['name'] for t in turn['tools']]}",
                            flush=True,
                        )
                results[label] = runs
        finally:
            stop_server(process)
    return results


def section(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    rows = []
    for label, runs in results.items():
        for kind in ("tool", "plain"):
            turns = runs[kind]
            if not turns:
                continue
            first = [t["first_s"] for t in turns]
            total = [t["total_s"] for t in turns]
            rows.append(
                (
                    label,
                    "calls a tool" if kind == "tool" else "no tool",
                    len(turns),
                    f"{median(first):.2f} / {percentile(first, 90):.2f}",
                    f"{median(total):.2f} / {percentile(total, 90):.2f}",
                )
            )
    headers = ("Server", "Turn", "Turns", "First audio s (median / p90)", "Whole turn s (median / p90)")
    return [
        "## Spoken turns that call a tool",
        "",
        f"`bench/tool_turns.py`: {len(TOOL_REQUESTS)} spoken requests a tool answers and "
        f"{len(PLAIN_REQUESTS)} it does not, each sent whole to the streamed `/conversation` of a server "
        "with an MCP server on stdio (`bench/mcp_home.py`, whose tools answer at once) on the default "
        "models; time from the request to the first audio and to the end of the turn. Two servers: "
        'with `TOOL_ACKNOWLEDGEMENT` ("One moment, please." spoken as soon as a reply begins a tool '
        "call before saying anything) and without. A tool turn is one whose reply called a tool. "
        + machine.summary(),
        "",
        *table(headers, rows),
        "",
    ]
