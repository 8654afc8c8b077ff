"""The embedded voices (TTS_MODEL_NAME=embedded, the default): hibari's af_heart by default and
Piper's joe as `piper:joe`, one sample rate, two voices a listener tells apart (a woman's and a
man's: their median pitch an octave-ish apart), each heard back by Whisper."""

from __future__ import annotations

import numpy as np
import pytest

from backend.app.api.v1.compat import VoiceMap
from backend.app.audio.decode import resample
from backend.app.audio.types import Audio
from backend.app.backends.voice_pair import VoicePair
from backend.app.container import Services
from backend.app.core.errors import InvalidInputError
from backend.app.core.values import SynthesisRequest, TranscribeOptions
from backend.app.text.wer import word_error_rate
from tests.conftest import SYNTH_WER

TEXT = "The bakery on the corner sells fresh bread every morning before seven."


def median_pitch(audio: Audio) -> float:
    """Median fundamental frequency (Hz) over voiced 40 ms frames, by autocorrelation between 70 and
    400 Hz: crude, but a woman's and a man's voice land far apart."""
    samples = resample(audio, 16_000).samples.astype(np.float64)
    frame, hop = 640, 320
    lo, hi = 16_000 // 400, 16_000 // 70
    loudness = np.sqrt(np.mean(samples**2))
    pitches = []
    for start in range(0, len(samples) - frame, hop):
        x = samples[start : start + frame]
        if np.sqrt(np.mean(x**2)) < loudness:  # the louder half: voiced speech
            continue
        x = x - x.mean()
        corr = np.correlate(x, x, "full")[frame - 1 :]
        lag = lo + int(np.argmax(corr[lo:hi]))
        if corr[lag] > 0.3 * corr[0]:
            pitches.append(16_000 / lag)
    assert len(pitches) > 10
    return float(np.median(pitches))


@pytest.fixture(scope="module")
def pair(services: Services) -> VoicePair:
    backend = services.tts.backend
    assert isinstance(backend, VoicePair)
    return backend


def test_the_default_voice_and_the_second_are_two_voices_at_one_rate(
    pair: VoicePair, services: Services
) -> None:
    assert pair.speakers == ("heart", "joe") and pair.sample_rate == 24_000
    assert services.tts.engine_voices == ("heart", "joe")
    default = pair.synthesize(SynthesisRequest(TEXT))
    heart = pair.synthesize(SynthesisRequest(TEXT, speaker="heart"))
    joe = pair.synthesize(SynthesisRequest(TEXT, speaker="joe"))
    assert default.sample_rate == heart.sample_rate == joe.sample_rate == 24_000
    assert default.duration == heart.duration  # the same voice (its vocoder's noise differs run to run)
    assert abs(median_pitch(default) / median_pitch(heart) - 1) < 0.1
    assert median_pitch(heart) > 1.4 * median_pitch(joe)  # a woman's voice and a man's
    for audio in (heart, joe):
        heard = services.stt.backend.transcribe(resample(audio, 16_000), TranscribeOptions(language="en"))
        assert word_error_rate(TEXT, heard.text) <= SYNTH_WER, heard.text


def test_an_unknown_voice_is_a_clear_error(pair: VoicePair) -> None:
    with pytest.raises(InvalidInputError, match="heart, joe"):
        pair.synthesize(SynthesisRequest(TEXT, speaker="alice"))


def test_openai_stock_voices_stand_for_the_voice_of_their_gender(services: Services) -> None:
    voices = VoiceMap(services.tts.voices, {}, services.tts.engine_voice_genders)
    assert voices.resolve("echo") == "piper:joe" and voices.resolve("onyx") == "piper:joe"
    assert voices.resolve("nova") == "piper:heart"
    assert voices.resolve("alloy") is None  # the default voice
    assert voices.resolve("Joe") == "piper:joe"
    assert VoiceMap(services.tts.voices, {"alloy": "joe"}, services.tts.engine_voice_genders).resolve(
        "alloy"
    ) == ("piper:joe")
