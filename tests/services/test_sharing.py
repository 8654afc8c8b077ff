"""Concurrent requests share the server by stage: one request's long work on one model does not
hold another request's work on the others (each model has its own worker, and its engine's idle
threads sleep; the models take turns on the cores, the LLM between two tokens: core/cpu.py), so
two clients' turns overlap instead of queueing whole. Checked by the order in
which work finishes, on the real embedded models, never by a timer."""

from __future__ import annotations

import asyncio

from backend.app.container import Services
from backend.app.core.values import ChatMessage, GenerationOptions, TranscribeOptions
from backend.app.text.wer import word_error_rate
from tests.conftest import SENTENCE, SYNTH_WER, clip

LONG_TEXT = " ".join(f"This is sentence number {n} of a long answer read aloud." for n in range(1, 61))
"""Sixty sentences in Piper's joe: seconds of synthesis, against a fraction of one for the rest."""


async def _until_running(worker: object, finished: list[str]) -> None:
    """Wait (by polling the worker's load, not by a timer) until its model is at work."""
    while worker.load()[0] == 0:  # type: ignore[attr-defined]
        assert not finished, f"the long work finished before it was seen running: {finished}"
        await asyncio.sleep(0.01)


def test_a_long_synthesis_does_not_hold_transcription_or_chat(services: Services) -> None:
    """Without turns on the cores (CPU_SLICE_MS=0), the 16-token reply here took from 1 s to the
    whole synthesis (~15 s): llama.cpp's threads lost the cores to ONNX Runtime's."""
    finished: list[str] = []

    async def scenario() -> tuple[str, str, int]:
        async def speech() -> int:
            stream = await services.tts.speak(LONG_TEXT, voice="piper:joe")
            pieces = 0
            async for _ in stream:
                pieces += 1
            finished.append("tts")
            return pieces

        long = asyncio.create_task(speech())
        await _until_running(services.tts.worker, finished)
        heard = await services.stt.transcribe(clip("speech.wav"), TranscribeOptions(language="en"))
        finished.append("stt")
        said = await services.chat.complete_whole(
            [ChatMessage("user", "What is the capital of France?")],
            GenerationOptions(max_tokens=16, temperature=0.0),
        )
        finished.append("chat")
        return heard.text, said, await long

    heard, said, pieces = asyncio.run(scenario())
    assert finished == ["stt", "chat", "tts"], finished
    assert word_error_rate(SENTENCE, heard) <= SYNTH_WER, heard
    # Every segment was spoken, none dropped for the other requests.
    assert said.strip() and pieces == len(services.tts.prepare_text(LONG_TEXT)) > 5


def test_a_long_generation_does_not_hold_transcription_or_speech(services: Services) -> None:
    finished: list[str] = []

    async def scenario() -> tuple[str, str, int]:
        async def generation() -> str:
            text = await services.chat.complete_whole(
                [ChatMessage("user", "Write a long story about a dragon who learns to fly.")],
                GenerationOptions(max_tokens=400, temperature=0.0),
            )
            finished.append("chat")
            return text

        long = asyncio.create_task(generation())
        await _until_running(services.chat.worker, finished)
        heard = await services.stt.transcribe(clip("speech.wav"), TranscribeOptions(language="en"))
        finished.append("stt")
        stream = await services.tts.speak("The lights are on.")
        pieces = len([piece async for piece in stream])
        finished.append("tts")
        return heard.text, await long, pieces

    heard, counted, pieces = asyncio.run(scenario())
    assert finished == ["stt", "tts", "chat"], (finished, counted[:80])
    assert word_error_rate(SENTENCE, heard) <= SYNTH_WER, heard
    assert pieces >= 1 and len(counted.split()) > 200  # the long work was long, and went on
