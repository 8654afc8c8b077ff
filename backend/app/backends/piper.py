"""Text to speech with Piper (VITS voices on ONNX Runtime): the model's own voices, no cloning.

A multi-speaker Piper model (`num_speakers` > 1 in its `.onnx.json`) speaks each speaker of its
`speaker_id_map`; the library lists them as `piper:<name>`. The embedded voice has one speaker.
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
from backend.app.core.cpu import CpuTurns, in_turns
from backend.app.core.errors import InvalidInputError, ModelLoadError
from backend.app.core.values import ModelInfo, SynthesisRequest
from backend.app.text.word_timing import Sound, place_words


def _quiet_session(model: Path | bytes, use_cuda: bool) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session whose idle worker threads sleep instead of spinning.

    By default ONNX Runtime keeps its threads busy-waiting after each run; in a server that also
    holds Whisper and an LLM on the same cores, that spinning steals CPU from the other models.
    """
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers = ["CUDAExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, sess_options=options, providers=providers)


def _with_durations(path: Path) -> bytes | Path:
    """The voice with its duration predictor's output (frames per phoneme id, VITS's `w_ceil`)
    made a graph output, as piper-tts's `include_alignments` does; the file itself when the model
    has no such tensor (or already outputs it)."""
    import onnx
    from piper.patch_voice_with_alignment import add_alignment_output

    model = onnx.load(str(path))
    try:
        add_alignment_output(model)
    except ValueError:
        return path
    return bytes(model.SerializeToString())


SECONDS_PER_PHONEME = 0.055
_ESPEAK_CHINESE = {"cmn", "yue", "zh", "hak", "zhy"}


def espeak_language(voice: str) -> str:
    """The ISO 639-1 language of an espeak-ng voice name (`en-us` -> `en`; `cmn` Mandarin -> `zh`)."""
    base = voice.lower().replace("_", "-").split("-")[0]
    return "zh" if base in _ESPEAK_CHINESE else base


class PiperBackend:
    """A Piper `.onnx` voice (with its `.onnx.json` beside it)."""

    supports_cloning = False
    supports_speed = True  # VITS length_scale
    max_dialogue_speakers = 0  # a script is spoken turn by turn

    def __init__(self, model_name: str, device: str = "auto") -> None:
        from piper import PiperVoice

        if model_name in ("joe", "embedded"):
            path, label = embedded.piper_voice_file(), "piper en_US-joe-medium (embedded)"
            model_id = "piper-en_US-joe-medium"
        else:
            path = embedded.require_file(Path(model_name), "the Piper voice file")
            embedded.require_file(path.with_suffix(".onnx.json"), "the Piper voice config")
            label, model_id = f"piper {path.stem}", f"piper-{path.stem}"
        use_cuda = device == "cuda"
        try:
            self._voice = PiperVoice.load(path, use_cuda=use_cuda)
            self._voice.session = _quiet_session(_with_durations(path), use_cuda)
        except Exception as e:  # onnxruntime / json errors for a corrupt voice
            raise ModelLoadError(f"could not load the Piper voice {path}: {e}. {embedded.SETUP_HINT}") from e
        self.sample_rate = int(self._voice.config.sample_rate)
        self.languages = (espeak_language(self._voice.config.espeak_voice),)
        config = self._voice.config
        speaker_ids: dict[str, int] = {}
        if config.num_speakers > 1:
            speaker_ids = dict(config.speaker_id_map) or {str(i): i for i in range(config.num_speakers)}
        self._speaker_ids = speaker_ids
        self.speakers: tuple[str, ...] = tuple(sorted(speaker_ids, key=lambda name: speaker_ids[name]))
        self.info = ModelInfo(model=label, device="cuda" if use_cuda else "cpu", id=model_id)
        self._reading = functools.lru_cache(maxsize=4096)(self._phonemes)
        self.cpu: CpuTurns | None = None
        """Set by the server on a CPU: each sentence takes its turn on the cores (core/cpu.py)."""

    def prepare_voice(self, audio: Audio) -> object:
        raise NotImplementedError("Piper voices are fixed; they cannot clone a reference clip")

    def estimate_seconds(self, text: str) -> float:
        """Phonemes (espeak-ng, as synthesis uses them) at the 0.044-0.057 s each measured for
        en_US-joe-medium on English, digits and CJK, plus a pause per sentence."""
        sentences = self._voice.phonemize(text)
        return sum(len(phonemes) for phonemes in sentences) * SECONDS_PER_PHONEME + 0.2 * len(sentences)

    def synthesize(self, request: SynthesisRequest) -> Audio:
        from piper import SynthesisConfig

        speaker_id = None
        if request.speaker is not None:
            if request.speaker not in self._speaker_ids:
                raise InvalidInputError(f"this Piper model has no speaker {request.speaker!r}")
            speaker_id = self._speaker_ids[request.speaker]
        config = SynthesisConfig(length_scale=1.0 / request.speed, speaker_id=speaker_id)
        chunks = []
        sounds: list[Sound] | None = []
        offset = 0
        sentences = self._voice.synthesize(request.text, syn_config=config, include_alignments=True)
        for chunk in in_turns(sentences, self.cpu):  # one per sentence
            chunks.append(chunk.audio_float_array.astype(np.float32, copy=False))
            if chunk.phoneme_alignments is None:
                sounds = None  # a model without durations
            elif sounds is not None:
                for aligned in chunk.phoneme_alignments:
                    end = offset + aligned.num_samples
                    sounds.append(Sound(aligned.phoneme, offset / self.sample_rate, end / self.sample_rate))
                    offset = end
            offset = sum(len(c) for c in chunks)
            raise_if_cancelled()
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        words = None if sounds is None else place_words(request.text, sounds, self._reading)
        return Audio(samples, self.sample_rate, words)

    def _phonemes(self, word: str) -> str:
        """How the voice reads `word` on its own (espeak-ng's phonemes)."""
        return "".join("".join(sentence) for sentence in self._voice.phonemize(word))


def load(settings: Settings) -> PiperBackend:
    return PiperBackend(settings.tts.model_name, settings.tts.device)


def model_files(settings: Settings) -> ModelFiles:
    """The bundled voice, or a local `.onnx` voice file and its `.onnx.json` config."""
    name = settings.tts.model_name
    if name in ("joe", "embedded"):
        voice = embedded.package_dir(embedded.PIPER_PACKAGE) / embedded.PIPER_VOICE
        return ModelFiles("piper-en_US-joe-medium", "tts", (voice, voice.with_suffix(".onnx.json")))
    voice = Path(name)
    return ModelFiles(str(voice.resolve()), "tts", (voice, voice.with_suffix(".onnx.json")))
