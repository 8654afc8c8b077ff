"""Server-side tools over MCP, against a real MCP server written with the SDK (bench/mcp_home.py),
on stdio and on streamable HTTP behind a bearer token: tools listed, calls
answered, a slow server bounded, a huge result cut, a server that is down left out; and the
reply loop's bound on rounds of calls."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backend.app.core.sections import ToolsSettings
from backend.app.core.tools import ToolRequest
from backend.app.core.values import ChatMessage, GenerationOptions, ToolCall, ToolSpec
from backend.app.services.mcp_tools import McpTools, ToolStep
from backend.app.services.tool_loop import held, reply_with_tools
from tests.conftest import REPO
from tests.ports import free_port

STDIO = {"command": sys.executable, "args": ["-m", "bench.mcp_home"], "cwd": str(REPO)}


def _run(settings: ToolsSettings, calls: list[ToolCall]) -> tuple[set[str], list[ToolStep]]:
    """The tools offered once started, and `calls`' steps."""

    async def go() -> tuple[set[str], list[ToolStep]]:
        tools = McpTools(settings)
        await tools.start()
        try:
            return {s.name for s in tools.specs}, [await tools.call(c) for c in calls]
        finally:
            await tools.close()

    return asyncio.run(go())


def test_a_stdio_servers_tools_are_listed_and_called() -> None:
    settings = ToolsSettings(mcp_servers={"home": STDIO}, timeout_s=20, result_chars=500)
    calls = [
        ToolCall("c1", "get_weather", '{"city": "Oslo"}'),
        ToolCall("c2", "big_report", '{"topic": "tea"}'),
        ToolCall("c3", "set_light", '{"room": 5}'),  # arguments the tool refuses
        ToolCall("c4", "launch_rockets", "{}"),
    ]
    tools, (weather, report, refused, unknown) = _run(settings, calls)
    assert tools == {"get_weather", "set_light", "set_timer", "slow_lookup", "big_report"}
    assert '"temperature_c": 31' in weather.result and not weather.error and weather.server == "home"
    assert len(report.result) <= 520 and report.result.endswith("[cut]")  # 10 MB, cut to 500
    assert refused.error and unknown.error


def test_a_slow_tool_is_bounded_and_reported() -> None:
    settings = ToolsSettings(mcp_servers={"home": STDIO}, timeout_s=2)
    _, (slow,) = _run(settings, [ToolCall("c1", "slow_lookup", '{"query": "tea"}')])
    assert slow.error and "did not answer within 2 s" in slow.result and slow.ms < 4000


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.mcp_home", "http", str(port), "s3cret"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(100):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                asyncio.run(asyncio.sleep(0.1))
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_an_http_server_behind_a_header(http_server: str) -> None:
    good: dict[str, Any] = {"url": http_server, "headers": {"Authorization": "Bearer s3cret"}}
    tools, (weather,) = _run(
        ToolsSettings(mcp_servers={"home": good}, timeout_s=10),
        [ToolCall("c1", "get_weather", '{"city": "Lima"}')],
    )
    assert "Lima" in weather.result and not weather.error
    bad: dict[str, Any] = {"url": http_server, "headers": {"Authorization": "Bearer wrong"}}
    tools, (weather,) = _run(
        ToolsSettings(mcp_servers={"home": bad}, timeout_s=5),
        [ToolCall("c1", "get_weather", '{"city": "Lima"}')],
    )
    assert weather.error and tools == set()


def test_servers_that_are_down_are_left_out_and_the_others_kept() -> None:
    port = free_port()  # nothing listens there
    settings = ToolsSettings(
        mcp_servers={
            "home": STDIO,
            "gone": {"url": f"http://127.0.0.1:{port}/mcp"},
            "broken": {"command": sys.executable, "args": ["-c", "raise SystemExit(3)"]},
        },
        timeout_s=5,
    )

    async def go() -> dict[str, dict[str, object]]:
        tools = McpTools(settings)
        await tools.start()
        try:
            return tools.status()
        finally:
            await tools.close()

    status = asyncio.run(go())
    assert status["home"] == {"connected": True, "tools": 5}
    assert status["gone"]["connected"] is False and status["broken"]["connected"] is False


def test_settings_refuse_a_server_that_is_neither_or_both() -> None:
    with pytest.raises(ValueError):
        ToolsSettings(mcp_servers={"x": {}})
    with pytest.raises(ValueError):
        ToolsSettings(mcp_servers={"x": {"command": "a", "url": "http://b"}})
    with pytest.raises(ValueError):
        ToolsSettings(mcp_servers={"x": {"url": "file:///etc/passwd"}})
    wrapped = ToolsSettings.model_validate({"mcp_servers": '{"mcpServers": {"h": {"url": "http://h/mcp"}}}'})
    assert list(wrapped.mcp_servers) == ["h"]


class _AlwaysCalls:
    """An engine that calls a tool in every round, whatever it is told (a new city each round, or
    the same one when `repeats`): the loop, not a model, is what this checks (the real model's
    calls are tested in tests/backends)."""

    def __init__(self, repeats: bool = False) -> None:
        self.rounds: list[str] = []
        self.repeats = repeats

    def chat_tools_stream(
        self, messages: list[ChatMessage], options: GenerationOptions, tools: ToolRequest
    ) -> Iterator[str | ToolCall]:
        self.rounds.append(tools.choice)
        if tools.choice == "none":
            yield "Here is what I found."
            return
        city = "Oslo" if self.repeats else f"City {len(self.rounds)}"
        yield ToolCall(f"c{len(self.rounds)}", "get_weather", json.dumps({"city": city}))


def test_a_tool_loop_that_never_ends_is_bounded() -> None:
    engine = _AlwaysCalls()
    spec = ToolSpec("get_weather", "", {"type": "object"})
    items = list(
        reply_with_tools(
            engine,
            [ChatMessage("user", "weather?")],
            GenerationOptions(16, 0.0),
            ToolRequest((spec,)),
            lambda call: ToolStep(call, "sunny", "home"),
            max_steps=3,
            acknowledgement="One moment.",
        )
    )
    assert engine.rounds == ["auto", "auto", "auto", "none"]  # three rounds of calls, then an answer
    assert [i for i in items if isinstance(i, str)] == ["One moment. ", "Here is what I found."]
    assert sum(isinstance(i, ToolStep) for i in items) == 3


def test_a_call_repeated_after_its_answer_makes_the_model_answer() -> None:
    engine = _AlwaysCalls(repeats=True)
    spec = ToolSpec("get_weather", "", {"type": "object"})
    answered = ToolCall("c0", "get_weather", '{ "city":"Oslo" }')  # the same call, spaced otherwise
    history = [
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "", tool_calls=(answered,)),
        ChatMessage("tool", "sunny", tool_call_id="c0"),
    ]
    run = lambda call: ToolStep(call, "sunny", "home")  # noqa: E731
    items = list(
        reply_with_tools(engine, history, GenerationOptions(16, 0.0), ToolRequest((spec,)), run, max_steps=3)
    )
    assert engine.rounds == ["auto", "none"] and items == ["Here is what I found."]


def test_a_round_whose_calls_all_fail_is_said_aloud() -> None:
    engine = _AlwaysCalls()
    spec = ToolSpec("get_weather", "", {"type": "object"})
    items = list(
        reply_with_tools(
            engine,
            [ChatMessage("user", "weather?")],
            GenerationOptions(16, 0.0),
            ToolRequest((spec,)),
            lambda call: ToolStep(call, "home did not answer", "home", error=True),
            max_steps=3,
        )
    )
    assert [i for i in items if isinstance(i, str)] == [" I couldn't reach home."]
    assert engine.rounds == ["auto"]


def test_a_pre_emptive_replys_tool_waits_for_the_turn_to_be_confirmed() -> None:
    """A reply begun during the silence runs no tool until the user has surely finished."""
    import threading
    import time

    class Hold:
        confirmed = False

    hold, order = Hold(), []

    def run(call: ToolCall) -> ToolStep:
        order.append("ran")
        return ToolStep(call, "done")

    def confirm() -> None:
        time.sleep(0.2)
        order.append("confirmed")
        hold.confirmed = True

    threading.Thread(target=confirm).start()
    step = held(run, hold)(ToolCall("c1", "set_light", "{}"))
    assert order == ["confirmed", "ran"] and step.result == "done"


class _WritesBadCall:
    """An engine whose call could not be read: it signals the call, then gives its markup back."""

    def chat_tools_stream(
        self, messages: list[ChatMessage], options: GenerationOptions, tools: ToolRequest
    ) -> Iterator[object]:
        from backend.app.core.values import CallPending

        yield CallPending()
        yield '<tool_call>{"name": "get_weather", "arguments": {"city": '


def test_a_call_given_back_as_text_is_never_read_aloud() -> None:
    spec = ToolSpec("get_weather", "", {"type": "object"})
    items = list(
        reply_with_tools(
            _WritesBadCall(),  # type: ignore[arg-type]
            [ChatMessage("user", "weather?")],
            GenerationOptions(16, 0.0),
            ToolRequest((spec,)),
            lambda call: ToolStep(call, "sunny"),
            max_steps=3,
            acknowledgement="One moment, please.",
        )
    )
    assert items == ["One moment, please. ", " Sorry, I couldn't do that."]


def test_the_same_action_asked_again_in_a_later_turn_is_run_again() -> None:
    engine = _AlwaysCalls(repeats=True)
    spec = ToolSpec("get_weather", "", {"type": "object"})
    before = ToolCall("c0", "get_weather", '{"city": "Oslo"}')
    history = [
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "", tool_calls=(before,)),
        ChatMessage("tool", "sunny", tool_call_id="c0"),
        ChatMessage("assistant", "It is sunny."),
        ChatMessage("user", "and now?"),
    ]
    ran: list[ToolCall] = []

    def run(call: ToolCall) -> ToolStep:
        ran.append(call)
        return ToolStep(call, "rain")

    list(
        reply_with_tools(engine, history, GenerationOptions(16, 0.0), ToolRequest((spec,)), run, max_steps=3)
    )
    assert len(ran) == 1  # run again in this turn, once: its repeat within the turn is not
    assert engine.rounds == ["auto", "auto", "none"]
