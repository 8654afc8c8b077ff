"""Turns that call server-side tools, end to end: the real server on the default LLM with an MCP
server (bench/mcp_home.py, on stdio) in MCP_SERVERS and two API keys. A typed, a spoken and a
Wyoming `handle` turn call the tool and answer with its result; the calls are stored with the turn;
a tool that does not answer in time is said aloud as not reached, and the turn ends; a key without
the `tools` scope gets answers without tools."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from backend.app.core.config import Settings
from tests.conftest import REPO
from tests.ports import free_port
from tests.server import server_dir, start_server, stop_server

SERVERS = {"home": {"command": sys.executable, "args": ["-m", "bench.mcp_home"], "cwd": str(REPO)}}
FAMILY, GUEST = "family-key", "guest-key"
KEYS = f"""
[[keys]]
name = "family"
key = "{FAMILY}"

[[keys]]
name = "guest"
key = "{GUEST}"
scopes = ["stages", "conversation", "realtime"]
"""
WYOMING_PORT = free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = server_dir(tmp_path_factory, "tool-turns")
    (tmp / "keys.toml").write_text(KEYS)
    process, base = start_server(
        tmp,
        "tools.log",
        LLM_MODEL="embedded",
        LLM_MAX_TOKENS="48",
        MCP_SERVERS=json.dumps(SERVERS),
        TOOL_TIMEOUT_S="3",
        API_KEYS_FILE=str(tmp / "keys.toml"),
        WYOMING_URI=f"tcp://127.0.0.1:{WYOMING_PORT}",
    )
    try:
        yield base
        assert process.poll() is None, "the server died during the tests"
    finally:
        stop_server(process)


def _client(server: str, key: str = FAMILY) -> httpx.Client:
    return httpx.Client(base_url=server, timeout=120, headers={"Authorization": f"Bearer {key}"})


def _tools_of(http: httpx.Client, conversation: str) -> list[dict[str, object]]:
    turns = http.get(f"/conversations/{conversation}").json()["turns"]
    assert [t["role"] for t in turns] == ["user", "assistant"]
    return list(turns[1]["tools"])


def test_health_names_the_mcp_server(server: str) -> None:
    health = httpx.get(f"{server}/health", timeout=10).json()
    assert health["tools"] == {"home": {"connected": True, "tools": 5}}


def test_a_typed_turn_calls_the_tool_and_answers_with_its_result(server: str) -> None:
    with _client(server) as http:
        reply = http.post("/chat", json={"text": "What's the weather like in Chicago right now?"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert "31" in body["reply"], body
        (step,) = _tools_of(http, body["conversation_id"])
        assert step["name"] == "get_weather" and step["server"] == "home" and not step["error"]
        assert json.loads(str(step["arguments"]))["city"].lower().startswith("chicago")
        assert "31" in str(step["result"])


def test_a_spoken_turn_calls_the_tool(server: str) -> None:
    with _client(server) as http:
        said = http.post("/tts", json={"text": "Please turn on the light in the kitchen."})
        assert said.status_code == 200
        turn = http.post("/conversation", files={"audio_file": ("ask.wav", said.content)})
        assert turn.status_code == 200, turn.text
        body = turn.json()
        steps = _tools_of(http, body["conversation_id"])
        assert [s["name"] for s in steps] == ["set_light"], (body, steps)
        arguments = json.loads(str(steps[0]["arguments"]))
        assert "kitchen" in arguments["room"].lower() and arguments["on"] is True
        assert http.get(body["audio_url"]).status_code == 200


def test_a_tool_that_does_not_answer_is_said_not_reached(server: str) -> None:
    with _client(server) as http:
        reply = http.post("/chat", json={"text": "Use the slow archive to look up the history of tea."})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert "couldn't reach home" in body["reply"], body
        (step,) = _tools_of(http, body["conversation_id"])
        assert step["name"] == "slow_lookup" and step["error"]
        assert Settings().tools.acknowledgement in body["reply"]


def test_a_key_without_the_tools_scope_is_answered_without_tools(server: str) -> None:
    with _client(server, GUEST) as http:
        reply = http.post("/chat", json={"text": "Please turn on the light in the hall."})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["tools"] == [] and _tools_of(http, body["conversation_id"]) == []


def test_a_wyoming_handle_turn_calls_the_tool(server: str) -> None:
    from wyoming.asr import Transcript
    from wyoming.client import AsyncTcpClient
    from wyoming.handle import Handled

    async def run() -> Handled:
        async with AsyncTcpClient("127.0.0.1", WYOMING_PORT) as client:
            context = {"conversation_id": "wyoming-tools"}
            await client.write_event(
                Transcript(text="Switch off the bedroom light.", context=context).event()
            )
            async with asyncio.timeout(120):
                while True:
                    event = await client.read_event()
                    assert event is not None, "the server closed the connection"
                    if Handled.is_type(event.type):
                        return Handled.from_event(event)

    handled = asyncio.run(run())
    assert handled.text
    with _client(server) as http:
        (step,) = _tools_of(http, "wyoming-tools")
    assert step["name"] == "set_light" and json.loads(str(step["arguments"]))["on"] is False


def test_a_websocket_turn_calls_the_tool_and_says_so(server: str) -> None:
    """/ws/conversation: a spoken request; the turn's end carries the call, and the reply's audio
    begins with the acknowledgement, said as the call began."""
    from websockets.sync.client import connect

    from backend.app.audio.decode import decode_audio, resample

    with _client(server) as http:
        said = http.post("/tts", json={"text": "Please switch on the light in the garage."})
    speech = resample(decode_audio(said.content), 16000).samples
    pcm = (np.clip(np.concatenate([np.zeros(8000), speech, np.zeros(64000)]), -1, 1) * 32767).astype("<i2")
    url = server.replace("http://", "ws://") + "/ws/conversation"
    events: list[dict[str, object]] = []
    with connect(url, additional_headers={"Authorization": f"Bearer {FAMILY}"}, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        data = pcm.tobytes()
        for offset in range(0, len(data), 3200):  # 100 ms frames
            ws.send(data[offset : offset + 3200])
        while not events or events[-1].get("type") != "turn_end":
            message = ws.recv(timeout=120)
            if isinstance(message, str):
                events.append(json.loads(message))
        ws.send(json.dumps({"type": "stop"}))
    end = events[-1]
    tools = end["tools"]
    assert isinstance(tools, list) and [t["name"] for t in tools] == ["set_light"], end
    assert json.loads(tools[0]["arguments"])["on"] is True
    deltas = "".join(str(e["text"]) for e in events if e.get("type") == "reply_delta")
    assert deltas.startswith(Settings().tools.acknowledgement), deltas
