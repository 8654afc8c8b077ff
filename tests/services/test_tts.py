"""The TTS service on the real Piper voice: segmentation, joins and text validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from backend.app.audio.decode import resample
from backend.app.audio.types import Audio
from backend.app.container import Services
from backend.app.core.errors import AppError, InvalidInputError, TextTooLongError
from backend.app.core.values import SynthesisRequest, TranscribeOptions
from backend.app.services.tts import TTSService
from backend.app.text.wer import word_error_rate
from tests.conftest import SYNTH_WER


def longest_run(mask: np.ndarray) -> int:
    best = run = 0
    for value in mask:
        run = run + 1 if value else 0
        best = max(best, run)
    return best


def test_segments_are_joined_by_the_configured_silence_only(services: Services) -> None:
    settings = services.tts.settings.model_copy(
        update={"segment_threshold_chars": 40, "segment_silence_ms": 300}
    )
    tts = TTSService(
        services.tts.backend, services.tts.worker, services.tts.voices, services.tts.cache, settings
    )
    result = asyncio.run(tts.synthesize("The kettle is boiling now. Please bring two cups to the table."))
    assert result.segments == 2
    samples, rate = result.audio.samples, result.audio.sample_rate
    gap = int(0.3 * rate)
    assert longest_run(samples == 0) >= gap  # the inserted silence is there
    # ...and Piper's own leading/trailing silence was trimmed: the quiet stretch between the two
    # segments is the gap plus at most the kept margins and the fades.
    assert longest_run(np.abs(samples) < 0.01) <= gap + int(0.1 * rate)
    # No click: the speech fades into and out of the gap (a jump to or from zero at a join is what
    # clicks; within speech, sample-to-sample steps are the voice's own).
    zero = np.flatnonzero(samples == 0)
    runs = np.split(zero, np.flatnonzero(np.diff(zero) != 1) + 1)
    start, end = max(runs, key=len)[[0, -1]]
    assert np.max(np.abs(samples[end + 1 : end + 1 + 3])) < 0.05
    assert np.max(np.abs(samples[start - 3 : start])) < 0.05


def test_speed_changes_duration_through_the_service(services: Services) -> None:
    text = "Speaking at a different speed."
    normal = asyncio.run(services.tts.synthesize(text)).audio.duration
    fast = asyncio.run(services.tts.synthesize(text, speed=1.5)).audio.duration
    assert fast < normal * 0.8


def test_engines_without_a_rate_control_are_sped_up_by_the_service(services: Services) -> None:
    class FixedRate:
        """The embedded Piper voice, as an engine that cannot change its speed (like VibeVoice)."""

        supports_speed = False

        def __init__(self, engine: object) -> None:
            self.engine = engine

        def __getattr__(self, name: str) -> object:
            return getattr(self.engine, name)

        def synthesize(self, request: SynthesisRequest) -> Audio:
            assert request.speed == 1.0, "the engine must never be asked for another speed"
            made = services.tts.backend.synthesize(request)
            engine_seconds.append(made.duration)
            return made

    tts = TTSService(
        FixedRate(services.tts.backend),  # type: ignore[arg-type]
        services.tts.worker,
        services.tts.voices,
        services.tts.cache,
        services.tts.settings,
    )
    engine_seconds: list[float] = []
    text = "The quick brown fox jumps over the lazy dog."
    # Piper's durations vary from run to run (its duration predictor samples noise), so the sped-up
    # audio is compared with what the engine made for that same call.
    fast = asyncio.run(tts.synthesize(text, speed=1.5)).audio
    assert len(engine_seconds) == 1
    assert fast.duration == pytest.approx(engine_seconds[0] / 1.5, rel=0.05)
    heard = services.stt.backend.transcribe(resample(fast, 16_000), TranscribeOptions(language="en"))
    assert word_error_rate(text, heard.text) <= SYNTH_WER, heard.text


@pytest.mark.parametrize(("text", "status"), [("", 422), ("  ", 422), ("🎉 *** 🎉", 422), ("x" * 5001, 413)])
def test_unspeakable_or_oversize_text_is_refused(services: Services, text: str, status: int) -> None:
    with pytest.raises(AppError) as refused:
        services.tts.prepare_text(text)
    assert refused.value.status_code == status


def test_markdown_is_not_spoken(services: Services) -> None:
    assert services.tts.prepare_text("**Hello** _there_ 🎉") == ["Hello there"]


def test_text_is_bounded_by_the_speech_it_would_make(services: Services) -> None:
    """3,300 characters of digits fit MAX_TTS_CHARS, and the voice would spend minutes reading them
    out: refused before synthesis. 3,000 characters of English are not. (Chinese characters, which
    an English voice would spell out one by one, are refused for their language: a 422.)"""
    tts = services.tts
    with pytest.raises(InvalidInputError, match="Chinese"):
        asyncio.run(tts.synthesize("你好" * 1500))
    with pytest.raises(TextTooLongError, match="MAX_TTS_SPEECH_SECONDS"):
        asyncio.run(tts.speak("1234567890 " * 300))  # each number is ten words

    async def opened() -> int:
        speech = await tts.speak("This is a sentence of ordinary English text. " * 66)
        await speech.aclose()
        return speech.segments or 0

    assert asyncio.run(opened()) > 10
    assert tts.worker.pending == 0


def test_the_first_audio_of_a_streamed_reply_does_not_wait_for_a_long_first_sentence(
    services: Services,
) -> None:
    """An LLM-like source writes a 30-word first sentence word by word, and stops writing after
    its 20th word until audio has come out: the speech path must have spoken the first piece by
    then (else the source gives up and the test fails)."""
    from backend.app.services.speech import ReplyAudio

    reply = (
        "The old lighthouse keeper walked slowly along the rocky shore every single evening to "
        "watch the fishing boats come back safely to the harbour before the storms "
        "began to blow. He slept well."
    )
    words = reply.split()
    assert len(" ".join(words).split(".")[0].split()) == 30
    first_audio = asyncio.Event()
    written: list[str] = []

    async def deltas() -> AsyncIterator[str]:
        for i, word in enumerate(words):
            if i == 20:
                await asyncio.wait_for(first_audio.wait(), timeout=20)
            written.append(word)
            yield word + " "
            await asyncio.sleep(0.01)

    async def run() -> list[ReplyAudio]:
        stream = await services.tts.speak_stream(deltas())
        audio: list[ReplyAudio] = []
        async for event in stream:
            if isinstance(event, ReplyAudio):
                if not audio:
                    assert len(written) <= 20, "the first audio came after the 20th word"
                audio.append(event)
                first_audio.set()
        return audio

    audio = asyncio.run(run())
    assert len(audio) >= 2 and audio[0].audio.duration > 0.5
    # The pieces are the reply, spoken: heard whole, the words are there.
    spoken = Audio.join([piece.audio for piece in audio])
    heard = services.stt.backend.transcribe(resample(spoken, 16_000), TranscribeOptions(beam_size=1)).text
    assert " ".join(piece.text for piece in audio).split() == reply.split()
    assert word_error_rate(reply, heard) <= SYNTH_WER, heard
