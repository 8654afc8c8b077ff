"""What the OpenAI-compatible routes need beyond the services: which model names each stage
answers to, and which library voice each of OpenAI's stock voice names stands for.

Unmodified OpenAI clients send `whisper-1`, `tts-1` or `gpt-4o-mini` and voices such as `alloy`;
these tables let them work unchanged, while a typo still gets OpenAI's 404 `model_not_found`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from backend.app.core.errors import InvalidInputError, ModelNotFoundError, NotFoundError
from backend.app.services.dialogue import ENGINE_VOICE_PREFIX
from backend.app.voices.library import VoiceInfo, VoiceLibrary

Stage = Literal["stt", "tts", "chat"]
STAGES: tuple[Stage, ...] = get_args(Stage)

STOCK_MODELS: dict[Stage, tuple[str, ...]] = {
    "stt": ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"),
    "tts": ("tts-1", "tts-1-hd", "gpt-4o-mini-tts"),
    "chat": (
        "gpt-3.5-turbo",
        "gpt-4",
        "gpt-4-turbo",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
    ),
}
"""OpenAI's model names accepted as aliases of the model serving each stage."""

STOCK_VOICES: dict[str, str | None] = {
    "alloy": None,
    "ash": "man",
    "ballad": "man",
    "cedar": "man",
    "coral": "woman",
    "echo": "man",
    "fable": "man",
    "marin": "woman",
    "nova": "woman",
    "onyx": "man",
    "sage": "woman",
    "shimmer": "woman",
    "verse": "man",
}
"""OpenAI's stock voices and the voice gender each is usually heard as: the name stands for the first
library voice of that gender, else the default voice (None: always the default voice)."""

_GENDERS = {"man": ("man", "male", "m"), "woman": ("woman", "female", "f")}


@dataclass(frozen=True)
class ServedModel:
    id: str
    stage: Stage
    owned_by: str = "voice-dialogue-server"


class ModelCatalog:
    """The three served models, and the names (ids and aliases) each one accepts."""

    def __init__(self, ids: dict[Stage, str], aliases: dict[str, str] | None = None) -> None:
        self._models = [ServedModel(ids[stage], stage) for stage in STAGES]
        self._names: dict[str, dict[Stage, ServedModel]] = {}
        for stage, model in zip(STAGES, self._models, strict=True):
            names = [model.id, *STOCK_MODELS[stage]]
            names += [alias for alias, target in (aliases or {}).items() if target == stage]
            for name in names:
                self._names.setdefault(name.lower(), {})[stage] = model

    def models(self) -> list[ServedModel]:
        return list(self._models)

    def lookup(self, name: str) -> ServedModel:
        """The model `name` stands for, at any stage (404 model_not_found if none)."""
        served = self._names.get(name.strip().lower())
        if not served:
            raise self._not_found(name)
        return next(iter(served.values()))

    def resolve(self, name: str, stage: Stage) -> ServedModel:
        """The model serving `stage` when `name` is one of its names; 404 for an unknown name, 400
        for the name of another stage's model (a TTS model asked to transcribe)."""
        served = self._names.get(name.strip().lower())
        if not served:
            raise self._not_found(name)
        if stage not in served:
            other = next(iter(served))
            raise InvalidInputError(
                f"the model {name!r} is a {other} model; this route needs the {stage} model "
                f"{self._models[STAGES.index(stage)].id!r}",
                param="model",
            )
        return served[stage]

    def _not_found(self, name: str) -> ModelNotFoundError:
        served = ", ".join(m.id for m in self._models)
        return ModelNotFoundError(
            f"The model {name!r} does not exist. This server serves {served} "
            "(and OpenAI's stock names for each; GET /v1/models lists them)",
            param="model",
        )


class VoiceMap:
    """Turns the `voice` of an OpenAI speech request into a library voice name.

    In order: an OPENAI_VOICES override, a library voice of that name, OpenAI's stock name by the
    table above. None means the engine's own voice (the library is empty, or the engine does not
    clone and the name is a stock one).
    """

    def __init__(
        self,
        library: VoiceLibrary,
        overrides: dict[str, str] | None = None,
        engine_voices: dict[str, str] | None = None,
    ) -> None:
        self.library = library
        self.overrides = {name.lower(): target for name, target in (overrides or {}).items()}
        self.engine_voices = engine_voices or {}
        """A fixed-voice engine's own voices (name -> gender): a stock name stands for the first of its
        gender, as `piper:<name>`, and each is a valid name itself."""

    def resolve(self, voice: str, voices: list[VoiceInfo] | None = None) -> str | None:
        """The library voice file `voice` stands for, among `voices` when already listed."""
        wanted = voice.strip().lower()
        if not wanted:
            raise InvalidInputError("voice is empty", param="voice")
        voices = self.library.voices() if voices is None else voices
        if wanted in self.overrides:
            target = self.overrides[wanted]
            if target.lower() in self.engine_voices:
                return ENGINE_VOICE_PREFIX + target.lower()
            return self._known(target, voices).file
        if wanted in self.engine_voices:
            return ENGINE_VOICE_PREFIX + wanted
        try:
            return self.library.by_name(wanted, voices).file
        except NotFoundError:
            pass
        if wanted not in STOCK_VOICES:
            known = ", ".join([*STOCK_VOICES, *self.engine_voices, *(v.name for v in voices)])
            raise InvalidInputError(f"unknown voice {voice!r}; use one of: {known}", param="voice")
        if self.engine_voices:
            gender = STOCK_VOICES[wanted]
            same = [name for name, of in self.engine_voices.items() if gender and of in _GENDERS[gender]]
            return ENGINE_VOICE_PREFIX + same[0] if same else None
        chosen = self.stock_voice(wanted, voices)
        return chosen.file if chosen else None

    def stock_voice(self, name: str, voices: list[VoiceInfo]) -> VoiceInfo | None:
        """The library voice a stock OpenAI voice name stands for (before overrides)."""
        gender = STOCK_VOICES[name]
        if gender is not None:
            match = next((v for v in voices if (v.gender or "") in _GENDERS[gender]), None)
            if match:
                return match
        return self.library.default_among(voices)

    def table(self, voices: list[VoiceInfo] | None = None) -> dict[str, str | None]:
        """Every stock name (and override) with the library voice it stands for now; None for the
        engine's own voice or an override naming a voice that is not in the library."""
        voices = self.library.voices() if voices is None else voices
        table: dict[str, str | None] = {}
        for name in [*STOCK_VOICES, *self.overrides]:
            try:
                table[name] = self.resolve(name, voices)
            except InvalidInputError:
                table[name] = None
        return table

    def _known(self, target: str, voices: list[VoiceInfo]) -> VoiceInfo:
        try:
            return self.library.by_name(target, voices)
        except NotFoundError as e:
            raise InvalidInputError(
                f"OPENAI_VOICES maps this voice to {target!r}, which is not in the voice library",
                param="voice",
            ) from e
