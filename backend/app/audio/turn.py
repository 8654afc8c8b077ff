"""Whether a speaker has finished their turn, judged from how they sound: Smart Turn v3.2, a small
Whisper-encoder classifier (BSD-2-Clause; its ONNX file ships in the `pipecat-ai` wheel, which is
installed without its dependencies: nothing else of pipecat is used).

The model reads the last 8 s of the utterance (zero-padded in front when shorter) as Whisper's
80-band log-mel spectrogram and gives the probability that the turn is complete: a question asked
and done, rather than "I would like to book a... (thinking) ...table for two". Intonation and
rhythm carry it, in 23 languages. It runs on onnxruntime, one thread, in tens of milliseconds.

The features are computed here with numpy: transformers' `WhisperFeatureExtractor` computes the
same (`tests/audio/test_turn.py` compares them) but importing it costs the server ~1.6 s and
~200 MB at start-up in a configuration that otherwise never loads torch.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from backend.app.core.errors import ModelLoadError

SAMPLE_RATE = 16000
WINDOW_S = 8
"""The model sees this much of the utterance's end."""
N_FFT, HOP, N_MELS = 400, 160, 80
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"


def _hz_to_mel(hz: float | np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear to 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = 3.0 * hz / 200.0
    logarithmic = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, logarithmic, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = 200.0 * mel / 3.0
    logarithmic = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel >= 15.0, logarithmic, linear)


@cache
def mel_filters() -> np.ndarray:
    """Whisper's filter bank, (N_FFT // 2 + 1, N_MELS): triangles evenly spaced on the mel scale
    from 0 to 8 kHz, each normalised to unit area (Slaney)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    bins = np.linspace(0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    rising = (bins[:, None] - edges[None, :-2]) / np.diff(edges)[:-1]
    falling = (edges[None, 2:] - bins[:, None]) / np.diff(edges)[1:]
    triangles: np.ndarray = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))
    return triangles


@cache
def _hann() -> np.ndarray:
    window: np.ndarray = np.hanning(N_FFT + 1)[:-1]  # periodic, as torch's and transformers' are
    return window


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Whisper's input features for 16 kHz float32 `samples`, (N_MELS, frames): the waveform
    normalised to zero mean and unit variance, a centred STFT (reflect padding, periodic Hann,
    400-sample frames every 160), power through the mel bank, log10, floored 8 below the peak
    and scaled as Whisper expects. The last frame is dropped, as Whisper does."""
    x = samples.astype(np.float64)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    x = np.pad(x, N_FFT // 2, mode="reflect")
    frames = sliding_window_view(x, N_FFT)[::HOP] * _hann()
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = np.log10(np.maximum(power @ mel_filters(), 1e-10)).T[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    features: np.ndarray = ((mel + 4.0) / 4.0).astype(np.float32)
    return features


def last_window(samples: np.ndarray) -> np.ndarray:
    """The utterance's last WINDOW_S seconds, zero-padded in front when it is shorter."""
    size = WINDOW_S * SAMPLE_RATE
    tail: np.ndarray = samples[-size:].astype(np.float32)
    return np.pad(tail, (size - len(tail), 0)) if len(tail) < size else tail


def model_path() -> Path:
    """The ONNX file inside the installed `pipecat-ai` wheel (found, not imported)."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the end-of-turn model's package (pipecat-ai) is not installed; run `make setup`, or set "
            "TURN_DETECTION=silence"
        )
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "audio"
        / "turn"
        / "smart_turn"
        / "data"
        / MODEL_FILE
    )
    if not path.is_file():
        raise ModelLoadError(f"the end-of-turn model {MODEL_FILE} is missing from the pipecat-ai package")
    return path


class WordsJudge(Protocol):
    """The words' half of semantic turns: the probability that the user's message ends after
    `words` (None: nothing to judge)."""

    def finished(self, words: str, language: str | None = "en") -> float | None: ...


class EndOfTurn:
    """The loaded model, shared by every session (onnxruntime's `run` is thread-safe)."""

    model = "smart-turn v3.2"

    words: WordsJudge | None = None
    """The words' half, set beside the voice's when it loads (backends/turn_words.py)."""

    def __init__(self) -> None:
        try:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            self._session = onnxruntime.InferenceSession(
                str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except ModelLoadError:
            raise
        except Exception as e:  # an unreadable file, an onnxruntime that cannot run it
            raise ModelLoadError(f"could not load the end-of-turn model: {e}") from e

    def finished(self, samples: np.ndarray) -> float:
        """The probability that the speaker of `samples` (16 kHz float32, the utterance so far,
        its trailing pause included) has finished their turn. Blocking: tens of milliseconds."""
        features = log_mel(last_window(samples))[None]
        (probability,) = self._session.run(None, {"input_features": features})
        return float(np.asarray(probability).reshape(-1)[0])
