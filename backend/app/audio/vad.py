"""Voice activity detection on a live stream, with silero-vad's model (its ONNX weights ship in the
`silero-vad` wheel).

The model gives a speech probability per 32 ms window (512 samples at 16 kHz); the turn-taking rules
on top are ours: speech starts after `min_speech_ms` of windows over the threshold (so a click or a
cough does not barge in). The first silent window after speech is reported as a `pause`, so that a
caller can start transcribing before the silence is long enough to end the turn.

When the turn ends is decided one of two ways (`VADSettings.turn_detection`):
- `silence`: after `min_silence_ms` under the threshold (with hysteresis, as silero's own
  iterator does);
- `semantic`: an end-of-turn model (audio/turn.py) judges the utterance once `turn_pause_ms` of
  silence has passed, and again every RECHECK_MS while the silence lasts; when it says the
  speaker has finished (`turn_threshold`) the detector reports `finished`, and the caller ends
  the turn (`flush`) once it agrees (the realtime session also reads the words said so far).
  The silence ends the turn in any case after `turn_max_silence_ms`. A model that fails falls
  back to `min_silence_ms`.
A turn never outgrows `max_utterance_s`, whatever the model says.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from backend.app.audio.types import Audio
from backend.app.core.config import VADSettings
from backend.app.core.errors import ModelLoadError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW = 512
_WINDOW_MS = WINDOW * 1000 / SAMPLE_RATE
RECHECK_MS = 480
"""While a pause lasts and the speaker seemed unfinished, the end-of-turn model is asked again
this often (the pause itself is part of what it hears)."""

Judge = Callable[[np.ndarray], float]
"""The probability that the speaker of an utterance (16 kHz samples) has finished."""


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
    """`speech_start`; `pause` (first silence: `audio` is the utterance so far); `finished` (the
    end-of-turn model heard a speaker who has finished; once a pause); `resume` (speech again
    before the turn ended); `speech_end` (`audio` is the utterance, padded)."""

    kind: Literal["speech_start", "pause", "finished", "resume", "speech_end"]
    audio: Audio | None = None


def _windows(ms: float) -> int:
    return max(1, round(ms / _WINDOW_MS))


class VoiceActivityDetector:
    """Feed 16 kHz mono float32 samples in any chunk sizes; get turn events back. `end_of_turn`
    is the judge semantic turn detection asks (without one, turns end by silence)."""

    def __init__(
        self, probability: SpeechProbability, settings: VADSettings, end_of_turn: Judge | None = None
    ) -> None:
        self.settings = settings
        self._probability = probability
        self._judge = end_of_turn if settings.turn_detection == "semantic" else None
        self.verdicts: list[float] = []
        """What the end-of-turn model said of the utterance in progress, in order."""
        self._said_finished = False  # the model said so, in this pause
        self._pending = np.zeros(0, dtype=np.float32)
        pad_windows = _windows(settings.speech_pad_ms)
        self._preroll: deque[np.ndarray] = deque(maxlen=pad_windows)
        self._candidate: list[np.ndarray] = []  # windows over the threshold, not yet long enough
        self._utterance: list[np.ndarray] = []
        self._speaking = False
        self._silent_windows = 0
        self._min_speech = _windows(settings.min_speech_ms)
        self._min_silence = _windows(settings.min_silence_ms)
        self._first_check = _windows(settings.turn_pause_ms)
        self._recheck = _windows(RECHECK_MS)
        self._ceiling = _windows(settings.turn_max_silence_ms)
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
        """Process new audio; the events it completes, in order. A `finished` event is the last of
        its batch: the rest waits (`pending`) until the caller has acted on it."""
        self._pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        events: list[VADEvent] = []
        usable = len(self._pending) // WINDOW * WINDOW
        done = 0
        for start in range(0, usable, WINDOW):
            events += self._window(self._pending[start : start + WINDOW].copy())
            done = start + WINDOW
            if events and events[-1].kind == "finished":
                break  # the caller may end the turn here, before any later audio is taken in
        self._pending = self._pending[done:]
        return events

    @property
    def pending(self) -> bool:
        """Audio is waiting to be read (`feed` stopped at a `finished` event): feed again."""
        return len(self._pending) >= WINDOW

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
        self.verdicts, self._said_finished = [], False
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
            if self._judged_finished():
                events.append(VADEvent("finished"))
            if self._silent_windows >= (self._min_silence if self._judge is None else self._ceiling):
                events.append(self._end())
        elif speech and self._silent_windows:
            self._silent_windows, self._said_finished = 0, False
            events.append(VADEvent("resume"))
        if self._speaking and len(self._utterance) >= self._max_windows:
            events.append(self._end())  # a turn cannot grow without bound
        return events

    def _judged_finished(self) -> bool:
        """At this point of the pause, does the end-of-turn model (asked now) hear a speaker who
        has finished? At most once a pause: after a yes it is not asked again."""
        since = self._silent_windows - self._first_check
        if self._judge is None or since < 0 or since % self._recheck or self._said_finished:
            return False
        try:
            probability = self._judge(np.concatenate(self._utterance))
        except Exception:
            logger.exception("the end-of-turn model failed; turns of this session end by silence")
            self._judge = None
            return False
        self.verdicts.append(probability)
        self._said_finished = probability >= self.settings.turn_threshold
        return self._said_finished
