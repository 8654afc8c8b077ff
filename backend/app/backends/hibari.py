"""Text to speech with hibari (`TTS_MODEL_NAME=hibari`): Kokoro-82M's af_heart voice distilled to a
7.9 MB ONNX model, with its own grapheme-to-phoneme lexicons (no espeak-ng), from the
`hibari-tts` wheel (Apache-2.0). American English, 24 kHz, one voice; no cloning.

Only the voice that ships inside the wheel is used: hibari's other voices download on first use,
which an offline server cannot do. On two cores it speaks about 100 times faster than real time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.app.audio.types import Audio
from backend.app.backends import embedded
from backend.app.backends.model_files import ModelFiles
from backend.app.core.config import Settings
from backend.app.core.errors import ModelLoadError
from backend.app.core.values import ModelInfo, SynthesisRequest
from backend.app.core.worker import raise_if_cancelled
from backend.app.text.wer import spell_numbers

PACKAGE = "hibari"
MODEL_FILE = "assets/hibari.onnx"
VOICE = "heart"
SECONDS_PER_CHARACTER = 0.065
"""Speech per character of English text at speed 1.0, measured on hibari's af_heart voice (0.057 to
0.070 on plain sentences), numbers counted as their words."""


class HibariBackend:
    """The bundled af_heart voice."""

    supports_cloning = False
    supports_speed = True
    max_dialogue_speakers = 0  # a script is spoken turn by turn
    speakers: tuple[str, ...] = ()
    languages = ("en",)

    def __init__(self) -> None:
        try:
            from hibari import Hibari

            self._tts = Hibari(voice=VOICE, model=str(model_file()), threads=1)
        except ModelLoadError:
            raise
        except Exception as e:  # not installed, or its files unreadable
            raise ModelLoadError(f"could not load the hibari voice: {e}. {embedded.SETUP_HINT}") from e
        self.sample_rate = int(self._tts.sample_rate)
        self.info = ModelInfo(
            model="hibari af_heart (Kokoro-82M distilled)", device="cpu", id="hibari-af_heart"
        )

    def prepare_voice(self, audio: Audio) -> object:
        raise NotImplementedError("hibari's voice is fixed; it cannot clone a reference clip")

    def estimate_seconds(self, text: str) -> float:
        """Characters at the measured rate, numbers counted as the words they are read out as."""
        return len(spell_numbers(text)) * SECONDS_PER_CHARACTER

    def synthesize(self, request: SynthesisRequest) -> Audio:
        chunks = []
        for chunk in self._tts.stream(request.text, speed=request.speed):  # one per sentence
            chunks.append(np.asarray(chunk, dtype=np.float32))
            raise_if_cancelled()
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return Audio(samples, self.sample_rate)


def model_file() -> Path:
    return embedded.require_file(embedded.package_dir(PACKAGE) / MODEL_FILE, "the hibari voice file")


def load(settings: Settings) -> HibariBackend:
    return HibariBackend()


def model_files(settings: Settings) -> ModelFiles:
    return ModelFiles("hibari-af_heart", "tts", (embedded.package_dir(PACKAGE) / MODEL_FILE,))
