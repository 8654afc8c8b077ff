"""The embedded English voices as one engine (`TTS_MODEL_NAME=embedded`, the default): hibari's
af_heart (a woman's voice, Kokoro-82M distilled) speaks by default, Piper's en_US-joe-medium (a man's)
is the second voice. Both run on a CPU, neither clones.

The library lists them as the engine voices `piper:heart` and `piper:joe` (`GET /voices/builtin`), so
a request picks one by that name and a dialogue script's unmapped speakers take them in turn: a
two-speaker script is heard in two distinct voices with no setting. Joe's 22.05 kHz speech comes
resampled to hibari's 24 kHz, so every reply has one rate.
"""

from __future__ import annotations

import dataclasses
from typing import cast

from backend.app.audio.decode import resample
from backend.app.audio.types import Audio
from backend.app.backends import hibari, piper
from backend.app.backends.model_files import ModelFiles
from backend.app.backends.protocols import TextToSpeech
from backend.app.core.config import Settings
from backend.app.core.errors import InvalidInputError
from backend.app.core.values import ModelInfo, SynthesisRequest

DEFAULT_VOICE = "heart"
SECOND_VOICE = "joe"
GENDERS = {DEFAULT_VOICE: "woman", SECOND_VOICE: "man"}


class VoicePair:
    """Two fixed voices, each by its own engine, at the first one's sample rate."""

    supports_cloning = False
    max_dialogue_speakers = 0  # a script is spoken turn by turn, each turn in its speaker's voice
    languages = ("en",)

    def __init__(self, voices: dict[str, TextToSpeech]) -> None:
        self._voices = voices
        self.parts = tuple(voices.values())
        self.speakers = tuple(voices)
        self.speaker_genders = {name: GENDERS.get(name, "") for name in voices}
        self._default = voices[self.speakers[0]]
        self.sample_rate = self._default.sample_rate
        self.supports_speed = all(engine.supports_speed for engine in voices.values())
        names = " + ".join(engine.info.model for engine in voices.values())
        ids = "+".join(engine.info.id or name for name, engine in voices.items())
        self.info = ModelInfo(model=names, device=self._default.info.device, id=ids)

    def voice(self, speaker: str | None) -> TextToSpeech:
        """The engine that speaks `speaker` (None: the default voice)."""
        if speaker is None:
            return self._default
        if speaker not in self._voices:
            raise InvalidInputError(
                f"there is no embedded voice {speaker!r}; the voices are {', '.join(self.speakers)}"
            )
        return self._voices[speaker]

    def prepare_voice(self, audio: Audio) -> object:
        raise NotImplementedError("the embedded voices are fixed; they cannot clone a reference clip")

    def estimate_seconds(self, text: str) -> float:
        return self._default.estimate_seconds(text)

    def synthesize(self, request: SynthesisRequest) -> Audio:
        engine = self.voice(request.speaker)
        audio = engine.synthesize(dataclasses.replace(request, speaker=None))
        return audio if audio.sample_rate == self.sample_rate else resample(audio, self.sample_rate)

    def warm_up(self) -> None:
        """One tiny synthesis by the second voice (the default one is warmed by the caller)."""
        for engine in list(self._voices.values())[1:]:
            engine.synthesize(SynthesisRequest(getattr(engine, "warm_up_text", "Ready.")))


def _joe(settings: Settings) -> Settings:
    return settings.model_copy(update={"tts": settings.tts.model_copy(update={"model_name": "joe"})})


def load(settings: Settings) -> VoicePair:
    heart = cast(TextToSpeech, hibari.load(settings))
    joe = cast(TextToSpeech, piper.load(_joe(settings)))
    return VoicePair({DEFAULT_VOICE: heart, SECOND_VOICE: joe})


def model_files(settings: Settings) -> ModelFiles:
    heart, joe = hibari.model_files(settings), piper.model_files(_joe(settings))
    return ModelFiles("embedded-voices", "tts", (*heart.files, *joe.files))
