"""Text to speech with hibari (`TTS_MODEL_NAME=hibari`): Kokoro-82M's af_heart voice distilled to a
7.9 MB ONNX model, with its own grapheme-to-phoneme lexicons (no espeak-ng), from the
`hibari-tts` wheel (Apache-2.0). American English, 24 kHz, one voice; no cloning.

Only the voice that ships inside the wheel is used: hibari's other voices download on first use,
which an offline server cannot do. On two cores it speaks about 100 times faster than real time.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnxruntime

from backend.app.audio.types import Audio
from backend.app.backends import embedded
from backend.app.backends.model_files import ModelFiles
from backend.app.core.cancellation import raise_if_cancelled
from backend.app.core.config import Settings
from backend.app.core.cpu import CpuTurns, giving_way
from backend.app.core.errors import ModelLoadError
from backend.app.core.values import ModelInfo, SynthesisRequest
from backend.app.text.wer import spell_numbers
from backend.app.text.word_timing import Sound, place_words

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
    cpu: CpuTurns | None = None
    """The cores' turns (core/cpu.py): one thread, it takes a turn only to give way to a reply."""

    def __init__(self) -> None:
        try:
            from hibari import Hibari

            self._tts = Hibari(voice=VOICE, model=str(model_file()), threads=1)
            self._session = _session_with_durations(model_file())
            self._tts.sess = self._session  # one copy of the model: hibari's own session is let go
            self._reading = functools.lru_cache(maxsize=4096)(self._phonemes)
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
        """Sentence by sentence, as hibari's own `stream`, keeping the durations the model gives
        each phoneme (the word timings)."""
        from hibari import dsp

        chunks: list[np.ndarray] = []
        sounds: list[Sound] = []
        rng = np.random.default_rng()
        offset = 0
        for phonemes in self._tts.phonemize(request.text):  # one per sentence
            ids = self._tts.ids(phonemes)
            if len(ids) < 3:
                continue
            feeds = {"ids": np.asarray([ids], np.int64), "speed": np.asarray([request.speed], np.float32)}
            with giving_way(self.cpu):
                *outputs, durations = self._session.run(None, feeds)
                samples = np.asarray(dsp.synth(*(o[0] for o in outputs), rng), dtype=np.float32)
            spoken = [c for c in phonemes if c in self._tts.vocab]
            units = np.ravel(durations).astype(np.float64)
            per_unit = len(samples) / units.sum() if units.sum() > 0 else 0.0
            edges = offset + np.concatenate([[0.0], np.cumsum(units)]) * per_unit
            for i, symbol in enumerate(spoken, start=1):  # ids[0] and ids[-1] are the pads
                sounds.append(Sound(symbol, edges[i] / self.sample_rate, edges[i + 1] / self.sample_rate))
            chunks.append(samples)
            offset += len(samples)
            raise_if_cancelled()
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return Audio(samples, self.sample_rate, place_words(request.text, sounds, self._reading))

    def _phonemes(self, word: str) -> str:
        """How the voice reads `word` on its own (hibari's phonemes)."""
        return "".join(self._tts.phonemize(word))


DURATIONS = "/Cast_32_output_0"
"""The duration predictor's output in hibari.onnx: units of the model's frames per phoneme id."""


def _session_with_durations(path: Path) -> onnxruntime.InferenceSession:
    """hibari's model with its durations made a graph output (the last), on ONNX Runtime with
    one thread that sleeps when idle."""
    import onnx

    model = onnx.load(str(path))
    if not any(node.output and node.output[0] == DURATIONS for node in model.graph.node):
        raise ModelLoadError(f"{path} has no duration output ({DURATIONS}); is it hibari's model?")
    output = onnx.ValueInfoProto()
    output.name = DURATIONS
    model.graph.output.append(output)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )


def model_file() -> Path:
    return embedded.require_file(embedded.package_dir(PACKAGE) / MODEL_FILE, "the hibari voice file")


def load(settings: Settings) -> HibariBackend:
    return HibariBackend()


def model_files(settings: Settings) -> ModelFiles:
    return ModelFiles("hibari-af_heart", "tts", (embedded.package_dir(PACKAGE) / MODEL_FILE,))
