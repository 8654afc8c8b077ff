"""One TTS engine per language: the configured voice, and a voice for the language it cannot speak.

`TTS_CHINESE_MODEL_NAME` names a Chinese voice (`zh-baker`, or a Piper Mandarin `.onnx` file) for
a main voice that speaks no Chinese (the embedded English Piper): text in Chinese characters goes
to it, the rest to the main voice, piece by piece, so a reply in the user's language is spoken in
it. The router is itself a `TextToSpeech`: services see one engine with both languages.
"""

from __future__ import annotations

import dataclasses

from backend.app.audio.decode import resample
from backend.app.audio.types import Audio
from backend.app.backends.protocols import TextToSpeech
from backend.app.core.cancellation import raise_if_cancelled
from backend.app.core.errors import InvalidInputError
from backend.app.core.values import DialogueRequest, SynthesisRequest
from backend.app.text.chinese import script_language
from backend.app.text.languages import language_name
from backend.app.text.segment import join_pieces, split_sentences


def check_spoken(text: str, languages: tuple[str, ...]) -> None:
    """422 for text with a sentence in a script of a language the engine does not speak (Chinese
    characters for an English voice would be spelt out as noise). An engine that lists no
    languages is trusted."""
    if not languages:
        return
    found = (script_language(sentence) for sentence in split_sentences(text))
    language = next((code for code in found if code is not None and code not in languages), None)
    if language is None:
        return
    names = " and ".join(language_name(code).title() for code in languages)
    hint = " (set TTS_CHINESE_MODEL_NAME=zh-baker for a Chinese voice)" if language == "zh" else ""
    raise InvalidInputError(
        f"this text is {language_name(language).title()}; the voice speaks {names} only{hint}"
    )


PAUSE_S = 0.25
"""Between runs of different voices (a sentence end)."""


class LanguageRouter:
    """The main engine (its voices, cloning and dialogue), plus engines for other languages: their
    speech comes resampled to the main engine's rate, at the request's speed, in their own voice."""

    def __init__(self, main: TextToSpeech, others: dict[str, TextToSpeech]) -> None:
        self.main = main
        self.parts = (main, *others.values())
        self.others = {lang: engine for lang, engine in others.items() if lang not in main.languages}
        self.info = main.info
        self.sample_rate = main.sample_rate
        self.supports_cloning = main.supports_cloning
        self.supports_speed = main.supports_speed and all(e.supports_speed for e in self.others.values())
        self.speakers = main.speakers
        self.max_dialogue_speakers = main.max_dialogue_speakers
        self.languages = tuple(dict.fromkeys((*main.languages, *self.others)))
        self.warm_up_text = getattr(main, "warm_up_text", "Ready.")

    def engine_for(self, text: str) -> TextToSpeech:
        """The engine that speaks `text`: another language's when its script says so."""
        language = script_language(text)
        return self.others.get(language, self.main) if language else self.main

    def prepare_voice(self, audio: Audio) -> object:
        return self.main.prepare_voice(audio)

    def runs(self, text: str) -> list[tuple[TextToSpeech, str]]:
        """`text` cut into runs of whole sentences spoken by one engine each, in order."""
        runs: list[tuple[TextToSpeech, list[str]]] = []
        for sentence in split_sentences(text):
            engine = self.engine_for(sentence)
            if runs and runs[-1][0] is engine:
                runs[-1][1].append(sentence)
            else:
                runs.append((engine, [sentence]))
        return [(engine, join_pieces(sentences)) for engine, sentences in runs] or [(self.main, text)]

    def estimate_seconds(self, text: str) -> float:
        return sum(engine.estimate_seconds(run) for engine, run in self.runs(text))

    def synthesize(self, request: SynthesisRequest) -> Audio:
        """Each run by its engine, joined with a short pause (the other voices' speech resampled)."""
        pieces: list[Audio] = []
        for engine, run in self.runs(request.text):
            if engine is self.main:
                audio = self.main.synthesize(dataclasses.replace(request, text=run))
            else:
                speed = request.speed if self.supports_speed else 1.0
                audio = resample(engine.synthesize(SynthesisRequest(run, speed=speed)), self.sample_rate)
            if pieces:
                pieces.append(Audio.silence(PAUSE_S, self.sample_rate))
            pieces.append(audio)
            raise_if_cancelled()
        return Audio.join(pieces)

    def synthesize_dialogue(self, request: DialogueRequest) -> Audio:
        return self.main.synthesize_dialogue(request)  # type: ignore[attr-defined, no-any-return]

    def warm_up(self) -> None:
        """One tiny synthesis by each engine of another language, and the main one's other voices (its
        default voice is warmed by the caller)."""
        main_voices = getattr(self.main, "warm_up", None)
        if main_voices is not None:
            main_voices()
        for engine in self.others.values():
            engine.synthesize(SynthesisRequest(getattr(engine, "warm_up_text", "Ready.")))
