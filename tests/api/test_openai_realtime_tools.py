"""Function tools on /v1/realtime, through the official `openai` SDK's realtime client against
the real server on the default LLM (Qwen2.5-Coder-1.5B): a call announced as OpenAI streams it,
its output added as a `function_call_output` item, and the next response using it; a cancelled
response announces no call; malformed tools and unknown call ids are `error` events naming
the field. Every server event is checked against the SDK's own types."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from backend.app.backends.llamacpp_llm import LlamaCppChatBackend
from backend.app.container import Services
from backend.app.main import create_app
from tests.api.test_openai_realtime import Events, Server, sdk
from tests.conftest import make_settings, realtime_services
from tests.server import in_thread

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = "What's the weather like in Chicago right now?"


@pytest.fixture(scope="module")
def server(
    services: Services, qwen: LlamaCppChatBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    config = make_settings(tmp_path_factory.mktemp("rt-tools"))
    custom = realtime_services(services, config, 48, backend=qwen)
    with in_thread(create_app(config, custom)) as port:
        yield Server(f"http://127.0.0.1:{port}", custom)


def _user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def test_a_function_call_its_output_and_the_answer(server: Server) -> None:
    async def run() -> tuple[Events, dict[str, Any], dict[str, Any], str]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            conversation = (await events.of("conversation.created"))["conversation"]["id"]
            await connection.session.update(
                session={
                    "type": "realtime",
                    "output_modalities": ["text"],
                    "tools": [WEATHER],
                    "tool_choice": "auto",
                }
            )
            updated = await events.of("session.updated")
            assert updated["session"]["tools"][0]["name"] == "get_weather"
            await connection.conversation.item.create(item=_user(ASK))
            await connection.response.create()
            first = (await events.of("response.done"))["response"]
            call = next(o for o in first["output"] if o["type"] == "function_call")
            await connection.conversation.item.create(
                item={
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": '{"temperature_c": 31}',
                }
            )
            added = await events.of("conversation.item.done")
            assert (
                added["item"]["type"] == "function_call_output"
                and added["item"]["call_id"] == call["call_id"]
            )
            await connection.response.create()
            second = (await events.of("response.done"))["response"]
            return events, first, second, conversation

    events, first, second, conversation = asyncio.run(run())
    call = next(o for o in first["output"] if o["type"] == "function_call")
    assert first["status"] == "completed" and call["name"] == "get_weather" and call["status"] == "completed"
    assert json.loads(call["arguments"])["city"].lower().startswith("chicago")
    kinds = events.types()
    at = kinds.index("response.function_call_arguments.done")
    assert (
        kinds[at - 1] == "response.function_call_arguments.delta"
        and kinds[at + 1] == "response.output_item.done"
    )
    delta = next(e for e in events.all if e["type"] == "response.function_call_arguments.delta")
    assert delta["delta"] == call["arguments"] and delta["call_id"] == call["call_id"]
    answer = second["output"][0]["content"][0]["text"]
    assert "31" in answer and not [o for o in second["output"] if o["type"] == "function_call"], second
    stored = server.services.history.store.turns(conversation)
    assert [t.role for t in stored] == ["user", "assistant", "assistant", "assistant"]
    assert stored[2].tools[0]["result"] == '{"temperature_c": 31}' and stored[3].text == answer


def test_protocol_mistakes_are_error_events_naming_the_field(server: Server) -> None:
    async def run() -> list[dict[str, Any]]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            await events.of("conversation.created")
            errors = []
            for session in (
                {"tools": [{**WEATHER, "parameters": {"type": "array"}}]},
                {"tools": [{**WEATHER, "name": "no spaces allowed"}]},
                {
                    "tools": [
                        {"type": "mcp", "server_label": "anywhere", "server_url": "http://evil.example/mcp"}
                    ]
                },
                {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "launch"}},
            ):
                await connection.session.update(session={"type": "realtime", **session})
                errors.append((await events.of("error"))["error"])
            await connection.conversation.item.create(
                item={"type": "function_call_output", "call_id": "call_nobody", "output": "x"}
            )
            errors.append((await events.of("error"))["error"])
            await connection.response.create(
                response={"tools": [{"type": "function", "name": "f", "parameters": 3}]}
            )
            errors.append((await events.of("error"))["error"])
            return errors

    params = [e["param"] for e in asyncio.run(run())]
    assert params == [
        "session.tools[0].parameters",
        "session.tools[0].name",
        "session.tools[0].server_label",
        "session.tool_choice",
        "item.call_id",
        "response.tools[0].parameters",
    ]


def test_a_cancelled_response_announces_no_call(server: Server) -> None:
    async def run() -> dict[str, Any]:
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            events = Events(connection)
            await connection.session.update(
                session={"type": "realtime", "output_modalities": ["text"], "tools": [WEATHER]}
            )
            await events.of("session.updated")
            await connection.conversation.item.create(item=_user(ASK))
            await connection.response.create()
            await events.of("response.created")
            await connection.response.cancel()
            return (await events.of("response.done"))["response"]

    done = asyncio.run(run())
    assert done["status"] == "cancelled"
    assert [o["type"] for o in done["output"]] == ["message"]
