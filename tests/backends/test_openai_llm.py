"""The OpenAI-compatible chat backend, against a local OpenAI-style server backed by the real
embedded LLM (no network, no canned answers): the request shape, the reply, and upstream failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from backend.app.backends.openai_llm import OpenAIChatBackend
from backend.app.backends.protocols import ChatMessage, GenerationOptions
from backend.app.backends.transformers_llm import TransformersChatBackend
from backend.app.core.errors import ModelLoadError, UpstreamError
from tests.ports import free_port


@pytest.fixture(scope="module")
def compatible_server(llm: TransformersChatBackend) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A minimal /v1/chat/completions over the embedded SmolLM2; records the requests it gets."""
    app = FastAPI()
    seen: list[dict[str, Any]] = []

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        if body["model"] == "broken":
            return JSONResponse({"error": {"message": "model exploded"}}, status_code=500)
        messages = [ChatMessage(m["role"], m["content"]) for m in body["messages"]]
        reply = llm.chat(messages, GenerationOptions(body["max_tokens"], body["temperature"]))
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                ],
            }
        )

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", seen
    server.should_exit = True
    thread.join(timeout=10)


def test_chat_through_an_openai_compatible_server(
    compatible_server: tuple[str, list[dict[str, Any]]],
) -> None:
    base_url, seen = compatible_server
    backend = OpenAIChatBackend("smollm2", base_url, "sk-local", timeout_s=60)
    reply = backend.chat(
        [ChatMessage("user", "What is the capital of France? Answer in one word.")],
        GenerationOptions(max_tokens=16, temperature=0.0),
    )
    assert "paris" in reply.lower()
    request = seen[-1]
    assert request["auth"] == "Bearer sk-local"
    assert request["body"]["model"] == "smollm2"
    assert request["body"]["max_tokens"] == 16
    assert request["body"]["messages"] == [
        {"role": "user", "content": "What is the capital of France? Answer in one word."}
    ]
    assert request["body"]["temperature"] == 0.0
    assert backend.info.model == "smollm2" and base_url in backend.info.device


def test_server_error_is_an_upstream_error(compatible_server: tuple[str, list[dict[str, Any]]]) -> None:
    base_url, _ = compatible_server
    backend = OpenAIChatBackend("broken", base_url, "", timeout_s=10)
    with pytest.raises(UpstreamError, match="500"):
        backend.chat([ChatMessage("user", "hi")], GenerationOptions(max_tokens=4, temperature=0.0))


def test_unreachable_server_is_an_upstream_error() -> None:
    backend = OpenAIChatBackend("any", f"http://127.0.0.1:{free_port()}/v1", "", timeout_s=5)
    with pytest.raises(UpstreamError, match="could not be reached"):
        backend.chat([ChatMessage("user", "hi")], GenerationOptions(max_tokens=4, temperature=0.0))


def test_model_name_is_required() -> None:
    with pytest.raises(ModelLoadError, match="LLM_MODEL"):
        OpenAIChatBackend("", "http://127.0.0.1:1/v1", "", timeout_s=5)
