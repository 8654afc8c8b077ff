"""Turn-taking on the real silero-vad model, fed real speech (the embedded Piper voice) and silence."""

from __future__ import annotations

import numpy as np
import pytest

from backend.app.audio.decode import decode_audio
from backend.app.audio.vad import SAMPLE_RATE, SileroVAD, VADEvent, VoiceActivityDetector
from backend.app.core.config import VADSettings
from tests.conftest import DATA


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return decode_audio((DATA / "speech.wav").read_bytes(), SAMPLE_RATE).samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def run(detector: VoiceActivityDetector, audio: np.ndarray, chunk: int = 320) -> list[tuple[float, VADEvent]]:
    """Feed `audio` in 20 ms chunks, as a microphone would; (time fed, event) pairs."""
    events = []
    for start in range(0, len(audio), chunk):
        for event in detector.feed(audio[start : start + chunk]):
            events.append(((start + chunk) / SAMPLE_RATE, event))
    return events


def test_an_utterance_gives_start_pause_and_end_with_the_speech(vad: SileroVAD, speech: np.ndarray) -> None:
    detector = VoiceActivityDetector(vad.stream(), VADSettings(min_silence_ms=500, speech_pad_ms=300))
    events = run(detector, np.concatenate([silence(1.0), speech, silence(1.0)]))
    kinds = [e.kind for _, e in events]
    assert kinds[0] == "speech_start" and kinds[-1] == "speech_end"
    assert kinds.count("speech_start") == 1 and kinds.count("speech_end") == 1
    assert "pause" in kinds  # reported before the end, so STT can start early
    pause_at = next(t for t, e in events if e.kind == "pause")
    end_at, end = events[-1]
    assert end.audio is not None
    assert end_at - pause_at == pytest.approx(0.5, abs=0.1)  # VAD_MIN_SILENCE_MS after the pause
    assert end_at < 1.0 + len(speech) / SAMPLE_RATE + 0.7
    # The utterance holds the whole speech: a little pre-roll and at most the pad after it.
    loud = np.flatnonzero(np.abs(speech) > 0.02)
    speech_s = (loud[-1] - loud[0]) / SAMPLE_RATE
    assert speech_s < end.audio.duration < speech_s + 1.0


def test_silence_and_noise_floor_give_no_events(vad: SileroVAD) -> None:
    detector = VoiceActivityDetector(vad.stream(), VADSettings())
    rng = np.random.default_rng(0)
    hiss = (0.003 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32)
    assert run(detector, np.concatenate([silence(1.0), hiss])) == []
    assert detector.flush() == []


def test_a_click_is_too_short_to_start_a_turn(vad: SileroVAD, speech: np.ndarray) -> None:
    detector = VoiceActivityDetector(vad.stream(), VADSettings(min_speech_ms=600))
    loud = np.flatnonzero(np.abs(speech) > 0.02)
    blip = speech[loud[0] : loud[0] + int(0.15 * SAMPLE_RATE)]
    assert run(detector, np.concatenate([silence(0.5), blip, silence(1.0)])) == []


def test_a_long_utterance_is_cut_and_a_stream_end_flushes(vad: SileroVAD, speech: np.ndarray) -> None:
    detector = VoiceActivityDetector(vad.stream(), VADSettings(max_utterance_s=1.5))
    events = run(detector, speech)
    ends = [e for _, e in events if e.kind == "speech_end"]
    assert ends and all(e.audio is not None and e.audio.duration <= 1.6 for e in ends)
    detector = VoiceActivityDetector(vad.stream(), VADSettings())
    run(detector, np.concatenate([silence(0.5), speech[: len(speech) // 2]]))
    assert detector.speaking
    flushed = detector.flush()
    assert [e.kind for e in flushed] == ["speech_end"] and not detector.speaking


def test_streams_do_not_share_state(vad: SileroVAD, speech: np.ndarray) -> None:
    """Two sessions on one loaded model: feeding one does not move the other."""
    first = VoiceActivityDetector(vad.stream(), VADSettings())
    second = VoiceActivityDetector(vad.stream(), VADSettings())
    run(first, np.concatenate([silence(0.5), speech[: len(speech) // 2]]))
    assert first.speaking and not second.speaking
    assert run(second, silence(1.0)) == []
