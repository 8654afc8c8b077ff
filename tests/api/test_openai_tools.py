"""Tools on /v1/chat/completions, driven by the official `openai` client over HTTP against a real
server on the default LLM (Qwen2.5-Coder-1.5B on llama.cpp), and through a second server whose
chat stage is the first one's /v1 (LLM_BACKEND=openai: the tools are passed on). The requests
carry a voice assistant's system prompt, as a client's do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from backend.app.core.config import Settings
from tests.conftest import REPO
from tests.server import server_dir, start_server, stop_server

MODEL = REPO / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
SYSTEM = {"role": "system", "content": Settings().llm.system_prompt}
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIMER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "set_timer",
        "description": "Start a kitchen timer",
        "parameters": {
            "type": "object",
            "properties": {"minutes": {"type": "integer", "minimum": 1, "maximum": 60}},
            "required": ["minutes"],
        },
    },
}
TOOLS = [WEATHER, TIMER]
ASK = [SYSTEM, {"role": "user", "content": "What's the weather like in Chicago right now?"}]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not MODEL.is_file():
        pytest.fail(f"{MODEL} is not prepared (make models, which the test command runs)")
    return server_dir(tmp_path_factory, "openai-tools")


@pytest.fixture(scope="module")
def server(tmp: Path) -> Iterator[str]:
    process, base = start_server(tmp, "tools.log", LLM_MODEL="embedded", LLM_MAX_TOKENS="64", QUEUE_SIZE="4")
    try:
        yield base
        assert process.poll() is None, "the server died during the tests"
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def client(server: str) -> OpenAI:
    return OpenAI(base_url=f"{server}/v1", api_key="sk-anything", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def proxy(tmp: Path, server: str) -> Iterator[str]:
    process, base = start_server(
        tmp,
        "tools-proxy.log",
        LLM_BACKEND="openai",
        LLM_BASE_URL=f"{server}/v1",
        LLM_MODEL="gpt-4o-mini",
        LLM_MAX_TOKENS="64",
        DATA_DIR=str(tmp / "proxy-data"),
        OUTPUTS_DIR=str(tmp / "proxy-outputs"),
    )
    try:
        yield base
    finally:
        stop_server(process)


def test_a_call_and_the_answer_that_uses_its_result(client: OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"].lower().startswith("chicago")
    assert first.usage and first.usage.completion_tokens > 0

    history = [*ASK, choice.message.model_dump(exclude_none=True)]
    history.append(
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 31, "sky": "clear"}'}
    )
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=history, tools=TOOLS)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert "31" in (answer.choices[0].message.content or ""), answer.choices[0].message


def test_a_streamed_call_arrives_as_tool_call_deltas(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS, stream=True)
    chunks = list(stream)
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta.id or ""
            entry["name"] += (delta.function.name or "") if delta.function else ""
            entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
    assert [c["name"] for c in calls.values()] == ["get_weather"]
    assert json.loads(calls[0]["arguments"])["city"].lower().startswith("chicago") and calls[0]["id"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_tool_choice_named_required_and_none(client: OpenAI) -> None:
    hello = [SYSTEM, {"role": "user", "content": "Good morning!"}]
    named = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=hello,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "set_timer"}},
    )
    (call,) = named.choices[0].message.tool_calls or []
    minutes = json.loads(call.function.arguments)["minutes"]
    assert call.function.name == "set_timer" and 1 <= minutes <= 60
    required = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
    )
    assert required.choices[0].finish_reason == "tool_calls"
    none = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS, tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([{"type": "function", "function": {"name": "bad name"}}], "tools[0].name"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}],
            "tools[0].parameters",
        ),
        (
            [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "required": 3}},
                }
            ],
            "tools[0].parameters",
        ),
        (
            [WEATHER, {"type": "function", "function": {"name": "f", "parameters": "x"}}],
            "tools[1].parameters",
        ),
        ([WEATHER, WEATHER], "tools"),
    ],
)
def test_a_malformed_tool_is_a_400_naming_its_field(client: OpenAI, tools: list[Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=tools)
    assert refused.value.param == param, refused.value.body


def test_messages_that_break_the_protocol_are_400s(client: OpenAI, server: str) -> None:
    orphan = [*ASK, {"role": "tool", "tool_call_id": "call_nobody", "content": "18 C"}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=orphan, tools=TOOLS)
    assert refused.value.param == "messages.[2].tool_call_id"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tool_choice="required")
    assert refused.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=ASK,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "launch"}},
        )
    # A tool result of 10 MB: refused as too long for the context, the server unharmed.
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "x"}'},
    }
    huge = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "x" * 10_000_000},
    ]
    response = httpx.post(
        f"{server}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": huge, "tools": TOOLS},
        timeout=60,
    )
    assert 400 <= response.status_code < 500 and response.json()["error"]["message"]
    assert httpx.get(f"{server}/health", timeout=10).status_code == 200


def test_the_openai_backend_passes_tools_on(proxy: str) -> None:
    client = OpenAI(base_url=f"{proxy}/v1", api_key="sk-anything", max_retries=0, timeout=120)
    first = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS)
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and first.choices[0].finish_reason == "tool_calls"
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS, stream=True)
    names = [
        d.function.name
        for c in stream
        if c.choices
        for d in c.choices[0].delta.tool_calls or []
        if d.function and d.function.name
    ]
    assert names == ["get_weather"]
