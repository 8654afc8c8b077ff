"""The OpenAI Agents SDK's realtime agent, pointed at this server's /v1/realtime: it hears a spoken
question, calls its `function_tool`, and speaks an answer that uses the tool's result. The server
runs the default LLM (Qwen2.5-Coder-1.5B); the question is spoken by the server's own voice."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf

from backend.app.backends.llamacpp_llm import LlamaCppChatBackend
from backend.app.container import Services
from backend.app.main import create_app
from backend.app.text.wer import word_error_rate
from tests.api.test_openai_realtime import Server
from tests.conftest import make_settings, realtime_services
from tests.server import in_thread

agents = pytest.importorskip("agents", reason="openai-agents is not installed (requirements-dev.txt)")


@pytest.fixture(scope="module")
def server(
    services: Services, qwen: LlamaCppChatBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    config = make_settings(tmp_path_factory.mktemp("agents"))
    custom = realtime_services(services, config, 48, backend=qwen)
    with in_thread(create_app(config, custom)) as port:
        yield Server(f"http://127.0.0.1:{port}", custom)


def test_a_realtime_agent_calls_its_tool_and_speaks_the_result(server: Server) -> None:
    from agents import function_tool
    from agents.realtime import RealtimeAgent, RealtimeRunner

    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        asked.append(city)
        return json.dumps({"city": city, "temperature_c": 31, "sky": "clear"})

    question = "What's the weather like in Chicago right now?"
    speech = httpx.post(
        f"{server.url}/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": question, "response_format": "pcm"},
        timeout=60,
    )
    assert speech.status_code == 200

    async def run() -> tuple[bytes, list[object]]:
        agent = RealtimeAgent(
            name="Assistant", instructions="You are a helpful voice assistant.", tools=[get_weather]
        )
        url = server.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
        session = await RealtimeRunner(starting_agent=agent).run(
            model_config={"url": url, "api_key": "sk-any"}
        )
        audio = bytearray()
        async with session:
            await session.send_audio(speech.content + b"\x00\x00" * 48_000)  # the question, then 2 s of quiet
            async with asyncio.timeout(120):
                async for event in session:
                    if event.type == "audio" and asked:
                        audio += event.audio.data
                    if event.type == "agent_end" and asked and audio:
                        break
            history = list(session._history)
        return bytes(audio), history

    audio, history = asyncio.run(run())
    assert [c.lower() for c in asked] == ["chicago"]
    answers = [i for i in history if getattr(i, "role", "") == "assistant"]
    said = " ".join(str(getattr(part, "transcript", "") or "") for item in answers for part in item.content)
    assert "31" in said, history
    # The answer's audio says what its transcript says (the voice, heard back by the STT).
    samples = np.frombuffer(audio, dtype="<i2").astype(np.float32) / 32768
    wav = io.BytesIO()
    sf.write(wav, samples, 24_000, format="WAV", subtype="PCM_16")
    heard = httpx.post(f"{server.url}/stt", files={"file": ("answer.wav", wav.getvalue())}, timeout=60)
    assert heard.status_code == 200, heard.text
    assert word_error_rate(said, heard.json()["text"]) <= 0.4, (said, heard.json()["text"])
