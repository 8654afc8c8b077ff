"""The real embedded models: speech round trips, and clear errors for missing or corrupt files."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from backend.app.audio.decode import decode_audio, resample
from backend.app.backends import embedded
from backend.app.backends.piper import PiperBackend
from backend.app.backends.transformers_llm import TransformersChatBackend
from backend.app.backends.whisper import WhisperBackend
from backend.app.core.errors import ModelLoadError
from backend.app.core.values import ChatMessage, GenerationOptions, SynthesisRequest, TranscribeOptions
from backend.app.text.wer import word_error_rate
from tests.conftest import REPO, SENTENCE, clip


def test_piper_speaks_at_its_rate(piper: PiperBackend) -> None:
    audio = piper.synthesize(SynthesisRequest("Good morning."))
    assert audio.sample_rate == 22_050
    assert 0.5 < audio.duration < 3.0
    assert np.abs(audio.samples).max() > 0.1


def test_piper_speed_changes_length(piper: PiperBackend) -> None:
    # Piper draws its phoneme durations at random (noise_w): one reading at 1.5x has measured
    # 1.43-1.75 s against 2.03-2.61 s at 1.0, so single readings overlap the bound now and then.
    # The median of three does not (expected ratio 1/1.5 = 0.67; measured about 0.72).
    def median_duration(speed: float) -> float:
        text = "This sentence is read at two speeds."
        return float(
            np.median([piper.synthesize(SynthesisRequest(text, speed=speed)).duration for _ in range(3)])
        )

    assert median_duration(1.5) < median_duration(1.0) * 0.8


@pytest.mark.parametrize(
    "text",
    [
        "The weather today is sunny with a light breeze from the west.",
        "Please remind me to call my sister at seven o'clock tomorrow evening.",
    ],
)
def test_tts_to_stt_round_trip(piper: PiperBackend, whisper: WhisperBackend, text: str) -> None:
    speech = piper.synthesize(SynthesisRequest(text))
    result = whisper.transcribe(resample(speech, 16_000), TranscribeOptions(language="en"))
    # Piper samples its durations and noise, so a word or two may vary from run to run.
    assert word_error_rate(text, result.text) <= 0.25, result.text
    assert result.language == "en"
    assert result.segments and result.segments[-1].end <= result.duration + 0.5


def test_checked_in_clip_transcribes(whisper: WhisperBackend) -> None:
    audio = decode_audio(clip("speech.webm"), 16_000)
    result = whisper.transcribe(audio, TranscribeOptions(word_timestamps=True))
    assert word_error_rate(SENTENCE, result.text) <= 0.15, result.text
    words = [w for s in result.segments for w in s.words]
    assert len(words) >= 8 and all(w.start <= w.end for w in words)


def test_silence_gives_an_empty_transcript(whisper: WhisperBackend) -> None:
    result = whisper.transcribe(decode_audio(clip("silence.wav"), 16_000), TranscribeOptions())
    assert result.text == "" and result.segments == ()


def test_transformers_llm_answers_a_question(transformers_llm: TransformersChatBackend) -> None:
    reply = transformers_llm.chat(
        [ChatMessage("user", "What is the capital of France? Answer in one word.")],
        GenerationOptions(max_tokens=16, temperature=0.0),
    )
    assert "paris" in reply.lower()


def test_transformers_llm_respects_max_tokens(transformers_llm: TransformersChatBackend) -> None:
    reply = transformers_llm.chat(
        [ChatMessage("user", "Tell me a long story about a dragon.")],
        GenerationOptions(max_tokens=5, temperature=0.0),
    )
    assert 0 < len(reply.split()) <= 6


def test_transformers_llm_stream_is_the_same_reply_in_pieces(
    transformers_llm: TransformersChatBackend,
) -> None:
    messages = [ChatMessage("user", "What is the capital of France?")]
    options = GenerationOptions(max_tokens=24, temperature=0.0)
    deltas = list(transformers_llm.chat_stream(messages, options))
    assert len(deltas) > 1
    assert "".join(deltas).strip() == transformers_llm.chat(messages, options)


def test_closing_the_transformers_llm_stream_stops_generation(
    transformers_llm: TransformersChatBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted at the model generating the tokens: once the stream is closed, no more passes run."""
    decoder = transformers_llm._decoder
    forward = decoder.forward
    calls = 0

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", counted)
    stream = transformers_llm.chat_stream(
        [ChatMessage("user", "Tell me a very long story about a dragon and a knight.")],
        GenerationOptions(max_tokens=200, temperature=0.0),
    )
    taken = [next(stream), next(stream)]
    assert calls >= 2  # the spy sees the generation
    stream.close()  # returns once the generation thread has ended
    assert taken and calls < 10, f"{calls} forward passes for 2 deltas: generation did not stop"
    after = calls
    time.sleep(0.3)
    assert calls == after


def test_missing_stt_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model\.bin"):
        WhisperBackend(str(tmp_path), tmp_path)


def test_corrupt_stt_model_is_a_clear_error(tmp_path: Path) -> None:
    source = embedded.whisper_tiny_en_dir()
    broken = tmp_path / "whisper"
    shutil.copytree(source, broken)
    (broken / "model.bin").write_bytes((source / "model.bin").read_bytes()[:4096])
    with pytest.raises(ModelLoadError, match="could not load the STT model"):
        WhisperBackend(str(broken), tmp_path)


def test_corrupt_piper_voice_is_a_clear_error(tmp_path: Path) -> None:
    onnx = tmp_path / "voice.onnx"
    onnx.write_bytes(b"not an onnx model")
    shutil.copy(embedded.piper_voice_file().with_suffix(".onnx.json"), tmp_path / "voice.onnx.json")
    with pytest.raises(ModelLoadError, match=r"voice\.onnx"):
        PiperBackend(str(onnx))


def test_corrupt_converted_llm_is_a_clear_error(tmp_path: Path) -> None:
    source = embedded.smollm2_dir(REPO / "models")
    broken = tmp_path / "llm"
    shutil.copytree(source, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="could not load the LLM"):
        TransformersChatBackend(str(broken), tmp_path)


def test_missing_package_names_the_setup_command() -> None:
    with pytest.raises(ModelLoadError, match="make setup"):
        embedded.package_dir("no_such_model_package")
