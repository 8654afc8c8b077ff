"""The STT service on the real embedded model: files of any format, decoded audio, its checks, and
the model's slot given back by a stream closed early."""

from __future__ import annotations

import asyncio

import pytest

from backend.app.audio.decode import decode_audio
from backend.app.container import Services
from backend.app.core.errors import AppError, InvalidInputError
from backend.app.core.values import TranscribeOptions
from backend.app.text.wer import word_error_rate
from tests.conftest import SENTENCE, SYNTH_WER, clip


@pytest.mark.parametrize("name", ["speech.wav", "speech.flac", "speech.mp3", "speech.webm"])
def test_a_file_of_any_format_is_heard(services: Services, name: str) -> None:
    heard = asyncio.run(services.stt.transcribe(clip(name), TranscribeOptions(language="en")))
    assert word_error_rate(SENTENCE, heard.text) <= SYNTH_WER, heard.text
    assert heard.language == "en" and heard.duration > 1


def test_decoded_audio_is_heard_as_its_file_is(services: Services) -> None:
    audio = decode_audio(clip("speech.wav"), 16000)
    heard = asyncio.run(services.stt.transcribe_audio(audio, TranscribeOptions(language="en")))
    assert word_error_rate(SENTENCE, heard.text) <= SYNTH_WER, heard.text


def test_silence_is_an_empty_transcript(services: Services) -> None:
    heard = asyncio.run(services.stt.transcribe(clip("silence.wav"), TranscribeOptions()))
    assert heard.text == ""


@pytest.mark.parametrize("language", ["xx", "english"])
def test_an_unknown_language_is_refused_before_any_work(services: Services, language: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        asyncio.run(services.stt.transcribe(clip("speech.wav"), TranscribeOptions(language=language)))
    assert refused.value.param == "language"


def test_what_is_not_audio_is_a_clear_error(services: Services) -> None:
    with pytest.raises(AppError) as refused:
        asyncio.run(services.stt.transcribe(b"certainly not audio", TranscribeOptions()))
    assert refused.value.status_code == 422


def test_a_transcription_stream_closed_early_frees_the_model(services: Services) -> None:
    stt = services.stt

    async def run() -> int:
        items = await stt.open_stream(clip("speech.wav"), TranscribeOptions(language="en"))
        await items.__anext__()  # the first segment, then the client goes away
        await items.aclose()
        for _ in range(100):
            if stt.worker.pending == 0:
                break
            await asyncio.sleep(0.05)
        return stt.worker.pending

    assert asyncio.run(run()) == 0
