"""Concurrent requests share the server by stage: one request's long work on one model does not
hold another request's work on the others (each model has its own worker, and its engine's idle
threads sleep; the engines take turns on the cores and leave a generating LLM room: core/cpu.py),
so two clients' turns overlap instead of queueing whole. Checked by the order in which work
finishes, on the real embedded models, never by a timer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from backend.app.container import Services
from backend.app.core.values import ChatMessage, GenerationOptions, TranscribeOptions
from backend.app.core.worker import ModelWorker
from backend.app.text.wer import word_error_rate
from tests.conftest import SENTENCE, SYNTH_WER, clip

LONG_TEXT = " ".join(f"This is sentence number {n} of a long answer read aloud." for n in range(1, 61))
"""Sixty sentences in Piper's joe: seconds of synthesis, against a fraction of one for the rest."""

Work = Callable[[], Awaitable[Any]]


async def _beside(
    long: tuple[str, Work, ModelWorker], short: list[tuple[str, Work]]
) -> tuple[list[str], Any, list[Any]]:
    """Start the long work, wait (by polling its worker's load, not by a timer) until its model is
    at it, then do the short ones one after another: the order all of them finished in, the long
    work's result and the short ones'."""
    name, work, worker = long
    finished: list[str] = []

    async def long_work() -> Any:
        result = await work()
        finished.append(name)
        return result

    task = asyncio.create_task(long_work())
    while worker.load()[0] == 0:
        assert not finished, f"the long work finished before it was seen running: {finished}"
        await asyncio.sleep(0.01)
    results = []
    for step, short_work in short:
        results.append(await short_work())
        finished.append(step)
    return finished, await task, results


async def _hear(services: Services) -> str:
    return (await services.stt.transcribe(clip("speech.wav"), TranscribeOptions(language="en"))).text


async def _count_pieces(services: Services, text: str, voice: str | None = None) -> int:
    return len([piece async for piece in await services.tts.speak(text, voice=voice)])


def test_a_long_synthesis_does_not_hold_transcription_or_chat(services: Services) -> None:
    """Without turns on the cores (CPU_SLICE_MS=0), the 16-token reply here took from 1 s to the
    whole synthesis (~15 s): llama.cpp's threads lost the cores to ONNX Runtime's."""

    async def chat() -> str:
        return await services.chat.complete_whole(
            [ChatMessage("user", "What is the capital of France?")],
            GenerationOptions(max_tokens=16, temperature=0.0),
        )

    finished, pieces, (heard, said) = asyncio.run(
        _beside(
            ("tts", lambda: _count_pieces(services, LONG_TEXT, "piper:joe"), services.tts.worker),
            [("stt", lambda: _hear(services)), ("chat", chat)],
        )
    )
    assert finished == ["stt", "chat", "tts"], finished
    assert word_error_rate(SENTENCE, heard) <= SYNTH_WER, heard
    # Every segment was spoken, none dropped for the other requests.
    assert said.strip() and pieces == len(services.tts.prepare_text(LONG_TEXT)) > 5


def test_a_long_generation_does_not_hold_transcription_or_speech(services: Services) -> None:
    async def story() -> str:
        return await services.chat.complete_whole(
            [ChatMessage("user", "Write a long story about a dragon who learns to fly.")],
            GenerationOptions(max_tokens=400, temperature=0.0),
        )

    finished, counted, (heard, pieces) = asyncio.run(
        _beside(
            ("chat", story, services.chat.worker),
            [
                ("stt", lambda: _hear(services)),
                ("tts", lambda: _count_pieces(services, "The lights are on.")),
            ],
        )
    )
    assert finished == ["stt", "tts", "chat"], (finished, counted[:80])
    assert word_error_rate(SENTENCE, heard) <= SYNTH_WER, heard
    assert pieces >= 1 and len(counted.split()) > 200  # the long work was long, and went on
