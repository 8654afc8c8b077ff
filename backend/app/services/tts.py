"""The TTS service: choose the voice, clean and segment the text, synthesise and join the segments.

Every route that speaks reaches synthesis through `speak` (a whole text), `speak_script` (a
dialogue script, services/dialogue.py) or `speak_stream` (text that streams in); each returns a
`SpeechStream` (services/speech.py), opened after every check, that makes its audio through a
`Synthesizer` (services/synthesis.py) built here, never through this service. Each limit is checked
in one method: `_check_chars` (MAX_TTS_CHARS; `check_streamed_chars` for text that streams in),
`_check_script` (MAX_SCRIPT_TURNS, then the characters) and `_check_speech` (MAX_TTS_SPEECH_SECONDS).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from backend.app.audio.types import Audio
from backend.app.backends.protocols import TextToSpeech, WordAligner
from backend.app.core.admission import SPOKEN_CHARS_PER_S
from backend.app.core.config import TTSSettings
from backend.app.core.errors import InvalidInputError, NotFoundError, TextTooLongError
from backend.app.core.metrics import ServiceMetrics
from backend.app.core.values import ModelInfo
from backend.app.core.worker import ModelWorker
from backend.app.services.dialogue import (
    ENGINE_VOICE_PREFIX,
    Cast,
    choose_cast,
    default_order,
    engine_voice_name,
    turn_texts,
    windows,
)
from backend.app.services.speech import AsyncQueueSource, Piece, SpeechStream
from backend.app.services.synthesis import Synthesizer
from backend.app.text.chinese import HAN
from backend.app.text.script import Script, parse_script, script_of
from backend.app.voices.cache import SpeakerCache
from backend.app.voices.library import VoiceInfo, VoiceLibrary

logger = logging.getLogger(__name__)


HAN_PER_S = 4.0
"""About how many Chinese characters a second of speech says."""


def spoken_seconds(texts: Iterable[str]) -> float:
    """About how many seconds of speech `texts` make at normal speed: the size of their TTS work
    (core/admission.py), known before any is synthesised."""
    total = 0.0
    for text in texts:
        han = len(HAN.findall(text))
        total += han / HAN_PER_S + (len(text) - han) / SPOKEN_CHARS_PER_S
    return total


@dataclass(frozen=True)
class Synthesis:
    audio: Audio
    segments: int
    voice: VoiceInfo | None
    """The reference voice applied (None when the engine has a fixed voice)."""


class TTSService:
    """Text to speech over one engine, with the speaker library and its cache."""

    def __init__(
        self,
        backend: TextToSpeech,
        worker: ModelWorker,
        voices: VoiceLibrary,
        cache: SpeakerCache[object],
        settings: TTSSettings,
        metrics: ServiceMetrics | None = None,
        aligner: WordAligner | None = None,
    ) -> None:
        self.backend = backend
        self.aligner = aligner
        self.worker = worker
        self.voices = voices
        self.cache = cache
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()

    @property
    def info(self) -> ModelInfo:
        """The TTS engine's model: its id, name and device."""
        return self.backend.info

    @property
    def supports_cloning(self) -> bool:
        """Whether the engine speaks in a reference voice (else it has voices of its own)."""
        return self.backend.supports_cloning

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the engine speaks (ISO 639-1); empty when it does not say."""
        return tuple(getattr(self.backend, "languages", ()))

    @property
    def dialogue_window_chars(self) -> int:
        """The most characters of a script one generation voices, for an engine that voices several
        speakers at once (DIALOGUE_WINDOW_CHARS)."""
        return self.settings.dialogue_window_chars

    def check_admission(self) -> None:
        """Refuse now (503) when the TTS queue is full: for speech whose pieces follow it up (text
        that streams in)."""
        self.worker.check()

    def prepare_text(self, text: str) -> list[str]:
        """Validate and clean `text`, and split it into segments."""
        self._check_chars(len(text))
        segments = self.segments(text)
        if not segments:
            raise InvalidInputError("text has nothing to speak (no letters or digits)")
        return segments

    @property
    def engine_voices(self) -> tuple[str, ...]:
        """The engine's own voices (a multi-speaker Piper model), listed as `piper:<name>`."""
        return tuple(getattr(self.backend, "speakers", ()))

    @property
    def engine_voice_genders(self) -> dict[str, str]:
        """The engine's own voices with the gender each is heard as ("" when unknown)."""
        genders = getattr(self.backend, "speaker_genders", {})
        return {name: genders.get(name, "") for name in self.engine_voices}

    @property
    def dialogue_speakers(self) -> int:
        """Speakers the engine voices in one generation (0: a script is spoken turn by turn)."""
        return int(getattr(self.backend, "max_dialogue_speakers", 0))

    def default_cast(self) -> list[str]:
        """The voices a script's unmapped speakers get, in order (blocking: lists the library)."""
        if self.backend.supports_cloning:
            return [v.file for v in default_order(self.voices, self.voices.voices())]
        if self.engine_voices:
            return [ENGINE_VOICE_PREFIX + name for name in self.engine_voices]
        return ["builtin"]

    def engine_voice(self, voice: str | None) -> str | None:
        """The engine voice `voice` names (`piper:<name>`), None for any other name; 404 unknown."""
        return engine_voice_name(voice, self.engine_voices)

    def choose_voice(self, voice: str | None, speaker_voice_path: str | None) -> VoiceInfo | None:
        """The named voice (validated even when the engine cannot clone), else the default."""
        if voice and self.engine_voice(voice):
            return None
        if voice:
            return self.voices.by_name(voice)
        if speaker_voice_path:
            return self.voices.by_path(speaker_voice_path)
        return self.voices.default if self.backend.supports_cloning else None

    def voice_for_language(self, language: str | None) -> str | None:
        """A library voice of `language` (`zh-*` for Chinese) when the engine clones and the default
        voice is of another language; None to keep the default (blocking: lists the library)."""
        default = self.voices.default
        if not language or not self.backend.supports_cloning or not default:
            return None
        if (default.language or "").lower() == language:
            return None
        match = [v for v in self.voices.voices() if (v.language or "").lower() == language]
        return match[0].file if match else None

    def synthesizer(self) -> Synthesizer:
        """The engine side of synthesis, over this service's engine, worker, cache and settings as
        they are now: what a `SpeechStream` is handed."""
        return Synthesizer(self.backend, self.worker, self.cache, self.settings, self.metrics, self.aligner)

    def speaker_prompt(self, voice: VoiceInfo) -> object:
        """The engine's prepared prompt for `voice`, from the cache (keyed by the file's content)."""
        return self.synthesizer().speaker_prompt(voice)

    def preload(self, names: list[str]) -> None:
        """Prepare the default voice and `names` now, so first requests find them cached."""
        if not self.backend.supports_cloning:
            return
        default = self.voices.default
        chosen = [default] if default else []
        for name in names:
            try:
                chosen.append(self.voices.by_name(name))
            except NotFoundError:
                logger.warning("PRELOAD_VOICES names an unknown voice %r; skipped", name)
        for voice in chosen:
            self.speaker_prompt(voice)
            logger.info("voice %s prepared", voice.file)

    def segments(self, piece: str) -> list[str]:
        """Text cleaned for speech and segmented ([] when it has nothing speakable)."""
        return self.synthesizer().segments(piece)

    async def speak(
        self,
        text: str,
        voice: str | None = None,
        speaker_voice_path: str | None = None,
        cfg_scale: float | None = None,
        speed: float = 1.0,
    ) -> SpeechStream:
        """Speech for a whole text, opened after every check (4xx, and 503 from the TTS queue,
        before any audio): the text is cleaned and segmented here, once, and each segment is a
        piece of the stream."""
        segments, chosen, cfg = await asyncio.to_thread(
            self._plan, text, voice, speaker_voice_path, cfg_scale, speed
        )
        # The slot is kept until the last segment; the backlog counts the whole text's speech.
        rate = max(speed, 0.25)
        admission = self.worker.admit(
            units=spoken_seconds(segments) / rate,
            step_units=max((spoken_seconds([s]) for s in segments), default=0.0) / rate,
        )
        return SpeechStream(
            self.synthesizer(),
            _each([Piece(segment, [segment]) for segment in segments]),
            self.applied_voice(chosen),
            cfg_scale=cfg,
            speed=speed,
            segments=len(segments),
            admission=admission,
            engine_voice=self.engine_voice(voice),
        )

    async def speak_script(
        self,
        script: Script,
        speakers: Mapping[str, str] | None = None,
        cfg_scale: float | None = None,
        speed: float = 1.0,
    ) -> SpeechStream:
        """Speech for a dialogue script, each speaker in the voice `speakers` maps it to (else the
        default cast), opened after every check like `speak`. An engine that voices several
        speakers at once speaks it window by window, any other turn by turn."""
        pieces, chosen_cast = await asyncio.to_thread(self._plan_script, script, speakers or {}, speed)
        cfg = self.settings.default_cfg_scale if cfg_scale is None else cfg_scale
        admission = self.worker.admit(units=spoken_seconds(t.text for t in script.turns) / max(speed, 0.25))
        stream = SpeechStream(
            self.synthesizer(),
            _each(pieces),
            None,
            cfg_scale=cfg,
            speed=speed,
            segments=sum(len(p.segments) for p in pieces),
            admission=admission,
            cast=chosen_cast,
        )
        stream.turns = len(script.turns)
        return stream

    def parse_script(
        self, text: str, known: Collection[str] = (), dialogue: bool | None = None
    ) -> Script | None:
        """The script `text` holds (None: plain text), its length checked first (blocking)."""
        self._check_chars(len(text))
        return parse_script(text, known, dialogue)

    def check_script(self, items: Sequence[tuple[str, str]]) -> Script:
        """A script given as (speaker, text) turns, bounded before it is parsed (blocking)."""
        self._check_script(len(items), sum(len(text) for _, text in items))
        return script_of(items)

    def _check_chars(self, chars: int, what: str = "text") -> None:
        """MAX_TTS_CHARS, for a text or a script (413 beyond): the one place it is checked."""
        if chars > self.settings.max_chars:
            raise TextTooLongError(f"{what} is {chars} characters; the limit is {self.settings.max_chars}")

    def check_streamed_chars(self, chars: int) -> None:
        """MAX_TTS_CHARS for text that streams in, `chars` of it so far (413 beyond)."""
        if chars > self.settings.max_chars:
            raise TextTooLongError(
                f"the streamed text passed {self.settings.max_chars} characters (MAX_TTS_CHARS)"
            )

    def _check_script(self, turns: int, chars: int) -> None:
        """A script's limits, MAX_SCRIPT_TURNS and then its characters (413 beyond): the one place
        they are checked, whether the script is given as turns or as text."""
        limit = self.settings.max_script_turns
        if turns > limit:
            raise TextTooLongError(f"the script has {turns} turns; the limit is {limit} (MAX_SCRIPT_TURNS)")
        self._check_chars(chars, "the script")

    def _check_speech(self, spoken: Iterable[str], speed: float, what: str) -> None:
        """MAX_TTS_SPEECH_SECONDS, the speech the engine would make of `spoken` at `speed`, estimated
        before any synthesis (413 beyond): the one place it is checked."""
        seconds = sum(self.backend.estimate_seconds(text) for text in spoken) / speed
        if seconds > self.settings.max_speech_seconds:
            raise TextTooLongError(
                f"this {what} would be about {seconds:.0f} s of speech; the limit is "
                f"{self.settings.max_speech_seconds:g} s (MAX_TTS_SPEECH_SECONDS)"
            )

    def _plan_script(
        self, script: Script, speakers: Mapping[str, str], speed: float
    ) -> tuple[list[Piece], Cast]:
        """A script's pieces and cast, validated before any synthesis (blocking: run it in a thread)."""
        self._check_script(len(script.turns), script.chars)
        chosen_cast = choose_cast(
            script,
            speakers,
            self.voices,
            clones=self.backend.supports_cloning,
            engine_voices=self.engine_voices,
        )
        pieces: list[Piece] = []
        if self.dialogue_speakers > 0:
            window_chars = self.settings.dialogue_window_chars
            parts = turn_texts(script, window_chars)
            for window in windows(parts, window_chars, self.dialogue_speakers):
                text = "\n".join(f"{script.turns[t.turn].label}: {t.text}" for t in window)
                turns = tuple(dict.fromkeys(t.turn for t in window))
                pieces.append(Piece(text, [text], window=window, turns=turns))
        else:
            for i, turn in enumerate(script.turns):
                segments = self.segments(turn.text)
                pieces.append(Piece(turn.text, segments, chosen_cast.members[turn.speaker], turns=(i,)))
        spoken = [t.text for p in pieces for t in p.window] or [s for p in pieces for s in p.segments]
        self._check_speech(spoken, speed, "script")
        return pieces, chosen_cast

    async def speak_stream(self, deltas: AsyncIterator[str], voice: str | None = None) -> SpeechStream:
        """Speech for text that streams in (an LLM's reply), opened after the voice is checked
        (404). The stream yields the deltas as `ReplyText` and each piece's audio as it is ready;
        its pieces are follow-ups of work admitted as a whole (a spoken turn), never refused."""
        chosen = await asyncio.to_thread(self.choose_voice, voice, None)
        synthesizer = self.synthesizer()
        source = AsyncQueueSource(deltas, synthesizer)
        cfg = self.settings.default_cfg_scale
        return SpeechStream(
            synthesizer,
            source.pieces(),
            self.applied_voice(chosen),
            cfg_scale=cfg,
            passthrough=source,
            engine_voice=self.engine_voice(voice),
        )

    async def synthesize(
        self,
        text: str,
        voice: str | None = None,
        speaker_voice_path: str | None = None,
        cfg_scale: float | None = None,
        speed: float = 1.0,
    ) -> Synthesis:
        """The whole speech at once: `speak`, collected."""
        stream = await self.speak(text, voice, speaker_voice_path, cfg_scale, speed)
        audio = await stream.collect()
        return Synthesis(audio, stream.segments or 0, stream.voice)

    def _plan(
        self,
        text: str,
        voice: str | None,
        speaker_voice_path: str | None,
        cfg_scale: float | None,
        speed: float = 1.0,
    ) -> tuple[list[str], VoiceInfo | None, float]:
        """A request's segments, voice and guidance, validated before any synthesis (blocking:
        run it in a thread). Text is bounded by what it will cost, the speech the engine would make
        of it, not by its characters alone: 4,000 CJK characters are 40 minutes of speech for an
        English voice that spells out each one."""
        segments = self.prepare_text(text)
        self._check_speech(segments, speed, "text")
        chosen = self.choose_voice(voice, speaker_voice_path)
        cfg = self.settings.default_cfg_scale if cfg_scale is None else cfg_scale
        return segments, chosen, cfg

    def applied_voice(self, voice: VoiceInfo | None) -> VoiceInfo | None:
        """The voice actually imitated: None when the engine has a fixed voice."""
        return self.synthesizer().applied_voice(voice)


async def _each(pieces: list[Piece]) -> AsyncGenerator[Piece, None]:
    """A whole text's pieces, planned before the stream opened."""
    for piece in pieces:
        yield piece
