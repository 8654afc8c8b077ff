"""Voice activity detection on a live stream, with silero-vad's model (its ONNX weights ship in the
`silero-vad` wheel).

The model gives a speech probability per 32 ms window (512 samples at 16 kHz); the turn-taking rules
on top are ours: speech starts after `min_speech_ms` of windows over the threshold (so a click or a
cough does not barge in), and ends after `min_silence_ms` under it (with hysteresis, as silero's own
iterator does). The first silent window after speech is reported as a `pause`, so that a caller can
start transcribing before the silence is long enough to end the turn.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from backend.app.audio.types import Audio
from backend.app.core.config import VADSettings
from backend.app.core.errors import ModelLoadError

SAMPLE_RATE = 16000
WINDOW = 512
_WINDOW_MS = WINDOW * 1000 / SAMPLE_RATE


class SpeechProbability(Protocol):
    def __call__(self, window: np.ndarray) -> float: ...


_CONTEXT = 64
"""Samples of the previous window the model sees before each new one (silero's own framing)."""


class _SileroStream:
    """One stream's view of the shared silero ONNX session: its own recurrent state and context."""

    def __init__(self, session: object) -> None:
        self._session = session  # an onnxruntime session; `run` is thread-safe
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT), dtype=np.float32)
        self._rate = np.array(SAMPLE_RATE, dtype=np.int64)

    def __call__(self, window: np.ndarray) -> float:
        x = np.concatenate([self._context, window.reshape(1, -1).astype(np.float32)], axis=1)
        inputs = {"input": x, "state": self._state, "sr": self._rate}
        out, self._state = self._session.run(None, inputs)  # type: ignore[attr-defined]
        self._context = x[:, -_CONTEXT:]
        return float(out[0][0])


class SileroVAD:
    """The loaded model; `stream()` gives an independent probability function per session.

    silero-vad's ONNX weights from its wheel, run with onnxruntime directly (one thread, no
    spinning): the package's own wrapper would import torch, hundreds of MB and seconds of
    start-up that nothing else in the default configuration needs."""

    def __init__(self) -> None:
        try:
            import importlib.util

            import onnxruntime

            spec = importlib.util.find_spec("silero_vad")
            if spec is None or not spec.submodule_search_locations:
                raise ModuleNotFoundError("the silero-vad package is not installed")
            path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # not installed, or its ONNX file unreadable
            raise ModelLoadError(f"could not load silero-vad: {e}; reinstall with `make setup`") from e
        from importlib.metadata import version

        self.model = f"silero-vad {version('silero-vad')}"

    def stream(self) -> SpeechProbability:
        return _SileroStream(self._session)


@dataclass(frozen=True)
class VADEvent:
    """`speech_start`; `pause` (first silence: `audio` is the utterance so far); `resume` (speech
    again before the turn ended); `speech_end` (`audio` is the utterance, padded)."""

    kind: Literal["speech_start", "pause", "resume", "speech_end"]
    audio: Audio | None = None


class VoiceActivityDetector:
    """Feed 16 kHz mono float32 samples in any chunk sizes; get turn events back."""

    def __init__(self, probability: SpeechProbability, settings: VADSettings) -> None:
        self.settings = settings
        self._probability = probability
        self._pending = np.zeros(0, dtype=np.float32)
        pad_windows = max(1, round(settings.speech_pad_ms / _WINDOW_MS))
        self._preroll: deque[np.ndarray] = deque(maxlen=pad_windows)
        self._candidate: list[np.ndarray] = []  # windows over the threshold, not yet long enough
        self._utterance: list[np.ndarray] = []
        self._speaking = False
        self._silent_windows = 0
        self._min_speech = max(1, round(settings.min_speech_ms / _WINDOW_MS))
        self._min_silence = max(1, round(settings.min_silence_ms / _WINDOW_MS))
        self._pad = pad_windows
        self._max_windows = int(settings.max_utterance_s * 1000 / _WINDOW_MS)

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def in_speech(self) -> bool:
        """Speech is being heard now: an utterance, and not in a pause that may end it."""
        return self._speaking and self._silent_windows == 0

    @property
    def utterance_s(self) -> float:
        """Seconds of the utterance in progress (its leading pad included); 0 between them."""
        return len(self._utterance) * WINDOW / SAMPLE_RATE if self._speaking else 0.0

    def current(self) -> Audio | None:
        """The utterance in progress so far (for a partial transcript), or None."""
        return self._audio() if self._speaking and self._utterance else None

    def feed(self, samples: np.ndarray) -> list[VADEvent]:
        """Process new audio; the events it completes, in order."""
        self._pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        events: list[VADEvent] = []
        usable = len(self._pending) // WINDOW * WINDOW
        for start in range(0, usable, WINDOW):
            events += self._window(self._pending[start : start + WINDOW].copy())
        self._pending = self._pending[usable:]
        return events

    def flush(self) -> list[VADEvent]:
        """The end of the stream: an utterance in progress ends here."""
        if not self._speaking:
            return []
        return [self._end()]

    def _audio(self) -> Audio:
        return Audio(np.concatenate(self._utterance), SAMPLE_RATE)

    def _end(self) -> VADEvent:
        # Keep at most the pad of trailing silence.
        drop = max(0, self._silent_windows - self._pad)
        if drop:
            del self._utterance[-drop:]
        event = VADEvent("speech_end", self._audio())
        self._utterance, self._candidate = [], []
        self._speaking, self._silent_windows = False, 0
        self._preroll.clear()
        return event

    def _window(self, window: np.ndarray) -> list[VADEvent]:
        probability = self._probability(window)
        speech = probability >= self.settings.threshold
        if not self._speaking:
            if not speech:
                self._preroll.extend(self._candidate)
                self._candidate = []
                self._preroll.append(window)
                return []
            self._candidate.append(window)
            if len(self._candidate) < self._min_speech:
                return []
            self._utterance = [*self._preroll, *self._candidate]
            self._preroll.clear()
            self._candidate = []
            self._speaking = True
            return [VADEvent("speech_start")]

        self._utterance.append(window)
        # Hysteresis, as in silero's iterator: only clearly non-speech windows count as silence.
        silent = probability < self.settings.threshold - 0.15
        events: list[VADEvent] = []
        if silent:
            self._silent_windows += 1
            if self._silent_windows == 1:
                events.append(VADEvent("pause", self._audio()))
            if self._silent_windows >= self._min_silence:
                events.append(self._end())
        elif speech and self._silent_windows:
            self._silent_windows = 0
            events.append(VADEvent("resume"))
        if self._speaking and len(self._utterance) >= self._max_windows:
            events.append(self._end())  # a turn cannot grow without bound
        return events
