"""The end-of-turn model (Smart Turn v3.2) on real speech from the embedded voice, and semantic
turn-taking in the VAD: a finished question is reported at once, a speaker left hanging is waited
for, up to the ceiling."""

from __future__ import annotations

import numpy as np
import pytest

from backend.app.audio.decode import decode_audio, resample
from backend.app.audio.turn import EndOfTurn, last_window, log_mel
from backend.app.audio.vad import SAMPLE_RATE, SileroVAD, VoiceActivityDetector
from backend.app.container import Services
from backend.app.core.config import VADSettings
from backend.app.core.values import SynthesisRequest
from tests.conftest import DATA

FINISHED = [
    "How tall is the Eiffel Tower?",
    "Turn on the lights in the living room and close the curtains.",
    "Can you tell me how to get to the nearest train station from here?",
    "Who wrote Romeo and Juliet?",
]
HESITATING = [
    "So I was thinking that maybe we could",
    "I want to, um",
    "Well, let me think, hmm",
    "I was wondering if you could, uh",
]
"""What the model hears as unfinished by a wide margin (~0.01 against ~0.95). A plain sentence
cut at a word boundary is not among them: the embedded voice says any text with a final fall."""


@pytest.fixture(scope="module")
def model() -> EndOfTurn:
    return EndOfTurn()


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


def said(services: Services, text: str) -> np.ndarray:
    """`text` in Piper's joe (`piper:joe`): its flat, even prosody is the hard case for the model, and
    its speech runs to the end of the clip, so a pause measured from the clip's end is the pause."""
    speech = services.tts.backend.synthesize(SynthesisRequest(text, speaker="joe"))
    return resample(speech, SAMPLE_RATE).samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def test_the_features_are_whispers() -> None:
    """Our numpy log-mel is the one the model was trained on (transformers' extractor)."""
    from transformers import WhisperFeatureExtractor

    window = last_window(decode_audio((DATA / "speech.wav").read_bytes(), SAMPLE_RATE).samples)
    reference = WhisperFeatureExtractor(chunk_length=8)(
        window, sampling_rate=SAMPLE_RATE, return_tensors="np", do_normalize=True
    ).input_features[0]
    ours = log_mel(window)
    assert ours.shape == reference.shape == (80, 800)
    assert np.abs(ours - reference).max() < 1e-3


def test_a_short_utterance_is_padded_in_front_and_a_long_one_keeps_its_end() -> None:
    short = np.ones(SAMPLE_RATE, dtype=np.float32)
    padded = last_window(short)
    assert len(padded) == 8 * SAMPLE_RATE and padded[: 7 * SAMPLE_RATE].max() == 0 and padded[-1] == 1
    long = np.arange(10 * SAMPLE_RATE, dtype=np.float32)
    assert last_window(long)[0] == 2 * SAMPLE_RATE


@pytest.mark.parametrize("text", FINISHED)
def test_a_finished_question_is_heard_as_finished(services: Services, model: EndOfTurn, text: str) -> None:
    assert model.finished(np.concatenate([said(services, text), silence(0.3)])) > 0.5


@pytest.mark.parametrize("text", HESITATING)
def test_a_speaker_who_hesitates_is_heard_as_unfinished(
    services: Services, model: EndOfTurn, text: str
) -> None:
    assert model.finished(np.concatenate([said(services, text), silence(0.3)])) < 0.5


def feed(detector: VoiceActivityDetector, audio: np.ndarray) -> list[tuple[float, str]]:
    """(seconds fed, event kind) for each event, fed in 20 ms chunks as a microphone would."""
    events = []
    for start in range(0, len(audio), 320):
        events += [((start + 320) / SAMPLE_RATE, e.kind) for e in detector.feed(audio[start : start + 320])]
    return events


def test_a_finished_speaker_is_reported_soon_and_the_silence_still_ends_the_turn(
    services: Services, model: EndOfTurn, vad: SileroVAD
) -> None:
    speech = said(services, FINISHED[0])
    settings = VADSettings(turn_pause_ms=200, turn_max_silence_ms=2000)
    detector = VoiceActivityDetector(vad.stream(), settings, model.finished)
    events = feed(detector, np.concatenate([silence(0.5), speech, silence(3.0)]))
    kinds = [kind for _, kind in events]
    assert kinds[0] == "speech_start" and kinds[-3:] == ["pause", "finished", "speech_end"], kinds
    at = dict((kind, t) for t, kind in events)  # the last of each kind
    assert at["finished"] - at["pause"] < 0.4  # judged at TURN_PAUSE_MS, not after a fixed silence
    assert at["speech_end"] - at["pause"] == pytest.approx(2.0, abs=0.1)  # the ceiling, if no one ends it


def test_a_hesitating_speaker_is_waited_for_until_the_ceiling(
    services: Services, model: EndOfTurn, vad: SileroVAD
) -> None:
    speech = said(services, HESITATING[0])
    detector = VoiceActivityDetector(vad.stream(), VADSettings(turn_max_silence_ms=2500), model.finished)
    events = feed(detector, np.concatenate([silence(0.5), speech, silence(3.5)]))
    kinds = [kind for _, kind in events]
    last_pause = len(kinds) - 1 - kinds[::-1].index("pause")  # (the voice may pause mid-phrase too)
    assert "finished" not in kinds[last_pause:] and kinds[-1] == "speech_end", kinds
    assert detector.verdicts == []  # reset with the turn's end
    at = dict((kind, t) for t, kind in events)  # the last of each kind
    assert at["speech_end"] - at["pause"] == pytest.approx(2.5, abs=0.1)


def test_turns_by_silence_ignore_the_model_and_a_failing_model_falls_back_to_silence(
    services: Services, model: EndOfTurn, vad: SileroVAD
) -> None:
    audio = np.concatenate([silence(0.5), said(services, FINISHED[3]), silence(1.5)])
    by_silence = VoiceActivityDetector(vad.stream(), VADSettings(turn_detection="silence"), model.finished)
    kinds = [kind for _, kind in feed(by_silence, audio)]
    assert kinds == ["speech_start", "pause", "speech_end"]

    def broken(samples: np.ndarray) -> float:
        raise RuntimeError("the model's session is gone")

    failing = VoiceActivityDetector(vad.stream(), VADSettings(min_silence_ms=500), broken)
    events = feed(failing, audio)
    at = dict((kind, t) for t, kind in events)
    assert [kind for _, kind in events] == ["speech_start", "pause", "speech_end"]
    assert at["speech_end"] - at["pause"] == pytest.approx(0.5, abs=0.1)
