"""The OpenAI-compatible chat backend, against a local OpenAI-style server backed by the real
embedded LLM (no network, no canned answers): the request shape, the reply, and upstream failures."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from backend.app.backends.openai_llm import OpenAIChatBackend
from backend.app.backends.protocols import ChatModel
from backend.app.core.errors import ModelLoadError, UpstreamError
from backend.app.core.logs import redact_credentials
from backend.app.core.values import ChatMessage, GenerationOptions
from tests.ports import free_port


def _chunks(
    llm: ChatModel,
    messages: list[ChatMessage],
    options: GenerationOptions,
    record: dict[str, Any],
) -> Iterator[str]:
    """OpenAI's streamed chunks, one per delta of the real model; records how far it got."""
    record["deltas"] = 0
    record["finished"] = False
    stream = llm.chat_stream(messages, options)
    try:
        for delta in stream:
            record["deltas"] += 1
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
            chunk["choices"] = [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]
            yield f"data: {json.dumps(chunk)}\n\n"
        record["finished"] = True  # generation ran to its end
        yield "data: [DONE]\n\n"
    finally:
        stream.close()


@pytest.fixture(scope="module")
def compatible_server(llm: ChatModel) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A minimal /v1/chat/completions over the embedded SmolLM2; records the requests it gets."""
    app = FastAPI()
    seen: list[dict[str, Any]] = []

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Response:
        body = await request.json()
        record: dict[str, Any] = {"body": body, "auth": request.headers.get("authorization")}
        seen.append(record)
        if body["model"] == "broken":
            return JSONResponse({"error": {"message": "model exploded"}}, status_code=500)
        if body["model"] == "echo-key":  # as OpenAI's own 401 quotes the key it was given
            key = (request.headers.get("authorization") or "").removeprefix("Bearer ")
            return JSONResponse({"error": {"message": f"Incorrect API key provided: {key}"}}, status_code=401)
        messages = [ChatMessage(m["role"], m["content"]) for m in body["messages"]]
        options = GenerationOptions(body["max_tokens"], body["temperature"])
        if body.get("stream"):
            return StreamingResponse(_chunks(llm, messages, options, record), media_type="text/event-stream")
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


def test_streamed_chat_through_an_openai_compatible_server(
    compatible_server: tuple[str, list[dict[str, Any]]],
) -> None:
    base_url, seen = compatible_server
    backend = OpenAIChatBackend("smollm2", base_url, "", timeout_s=60)
    messages = [ChatMessage("user", "What is the capital of France? Answer in one word.")]
    deltas = list(backend.chat_stream(messages, GenerationOptions(max_tokens=16, temperature=0.0)))
    assert len(deltas) >= 1 and "paris" in "".join(deltas).lower()
    assert seen[-1]["body"]["stream"] is True and seen[-1]["finished"] is True


def test_closing_the_stream_ends_the_upstream_generation(
    compatible_server: tuple[str, list[dict[str, Any]]],
) -> None:
    """Closing our iterator closes the HTTP response; the server sees the disconnect and stops."""
    base_url, seen = compatible_server
    backend = OpenAIChatBackend("smollm2", base_url, "", timeout_s=60)
    stream = backend.chat_stream(
        [ChatMessage("user", "Tell me a very long story about a dragon and a knight.")],
        GenerationOptions(max_tokens=200, temperature=0.0),
    )
    next(stream)
    stream.close()
    record = seen[-1]
    deadline = time.monotonic() + 10
    while "deltas" in record and not record["finished"] and time.monotonic() < deadline:
        before = record["deltas"]
        time.sleep(1.0)
        if record["deltas"] == before:
            break
    assert record["finished"] is False and record["deltas"] < 100


def test_a_broken_stream_is_an_upstream_error(compatible_server: tuple[str, list[dict[str, Any]]]) -> None:
    base_url, _ = compatible_server
    backend = OpenAIChatBackend("broken", base_url, "", timeout_s=10)
    with pytest.raises(UpstreamError, match="500"):
        list(
            backend.chat_stream([ChatMessage("user", "hi")], GenerationOptions(max_tokens=4, temperature=0.0))
        )


def test_the_llm_key_leaves_the_server_in_no_message_log_or_health(
    compatible_server: tuple[str, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    """LLM_API_KEY (and a password in LLM_BASE_URL) is sent to the LLM server and nowhere else: not
    in the error a client gets when the server quotes it back, not in any log line (the openai and
    httpx loggers at DEBUG included), not in what /health shows of the model."""
    base_url, _ = compatible_server
    secret = "sk-very-secret-llm-key-0123456789"
    with_login = base_url.replace("http://", "http://someone:hunter2pass@")
    caplog.set_level(logging.DEBUG)
    redact_credentials()  # as the server does at start-up
    for url in (base_url, with_login):
        backend = OpenAIChatBackend("echo-key", url, secret, timeout_s=10)
        with pytest.raises(UpstreamError) as refused:
            backend.chat([ChatMessage("user", "hi")], GenerationOptions(max_tokens=4, temperature=0.0))
        assert "401" in refused.value.message and "***" in refused.value.message
        for shown in (refused.value.message, backend.info.model, backend.info.device):
            assert secret not in shown and "hunter2pass" not in shown
    logged = "\n".join(f"{r.getMessage()} {r.args!r} {r.__dict__!r}" for r in caplog.records)
    assert caplog.records and secret not in logged and "hunter2pass" not in logged
