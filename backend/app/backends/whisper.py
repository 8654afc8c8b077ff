"""Speech to text with faster-whisper (CTranslate2)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from backend.app.audio.decode import resample
from backend.app.audio.types import Audio, Words
from backend.app.backends import embedded
from backend.app.backends.model_files import ModelFiles, dir_files, local_dir
from backend.app.backends.protocols import final_transcription
from backend.app.core.cancellation import raise_if_cancelled
from backend.app.core.config import Settings
from backend.app.core.cpu import CpuTurns, in_turns, taking_turn
from backend.app.core.errors import ModelLoadError
from backend.app.core.values import ModelInfo, TranscribeOptions, Transcription, TranscriptSegment, Word
from backend.app.text.chinese import script_language
from backend.app.text.segment import join_pieces
from backend.app.text.word_timing import Sound, place_words, words_of

T = TypeVar("T")
ALIGN_WINDOW_S = 30.0
"""Whisper's window: speech this long or shorter is force-aligned in one pass."""
TINY_EN_NAMES = ("embedded", "whisper-tiny.en")
"""The bundled tiny.en: `embedded` (which the registry pairs with Moonshine on a CPU) and
`whisper-tiny.en` (tiny.en alone)."""


def _cancellable(segments: Iterable[T]) -> Iterator[T]:
    """faster-whisper decodes one 30 s window per segment batch: stop between them when asked."""
    for segment in segments:
        raise_if_cancelled()
        yield segment


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


class WhisperBackend:
    """faster-whisper on a local CTranslate2 dir or a named size (downloaded into MODELS_DIR)."""

    sample_rate = 16_000

    def __init__(
        self,
        model_name: str,
        models_dir: Path,
        device: str = "auto",
        compute_type: str = "auto",
        beam_size: int = 5,
        vad_filter: bool = True,
    ) -> None:
        from backend.app.backends.whisper_budget import BoundedWhisperModel

        if model_name in TINY_EN_NAMES:
            source, label = str(embedded.whisper_tiny_en_dir()), "whisper-tiny.en (embedded)"
            model_id = "whisper-tiny.en"
        elif model_name == "base-multilingual":
            source = str(embedded.whisper_base_dir(models_dir))
            label, model_id = "whisper-base (embedded, multilingual)", "whisper-base"
        else:
            source, label = model_name, model_name
            model_id = Path(model_name).name if Path(model_name).is_dir() else model_name
            if Path(model_name).is_dir():
                embedded.require_file(Path(model_name) / "model.bin", "the Whisper model file")
        device = resolve_device(device)
        if device == "cuda":
            from backend.app.backends.cuda_libs import preload_cublas12

            preload_cublas12()
        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        try:
            self._model = BoundedWhisperModel(
                source,
                device=device,
                compute_type=compute_type,
                cpu_threads=os.cpu_count() or 0,
                download_root=str(models_dir),
            )
        except Exception as e:  # ctranslate2/hub raise a variety of types
            raise ModelLoadError(
                f"could not load the STT model {model_name!r} from {source}: {e}. For the embedded "
                f"models, {embedded.SETUP_HINT}; a named size must already be in MODELS_DIR "
                "when the machine is offline"
            ) from e
        self._beam_size = beam_size
        self._vad_filter = vad_filter
        self.multilingual = bool(self._model.model.is_multilingual)
        self.info = ModelInfo(model=label, device=f"{device} ({compute_type})", id=model_id)
        self.cpu: CpuTurns | None = None
        """Set by the server on a CPU: each window takes its turn on the cores (core/cpu.py)."""

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcription:
        return final_transcription(self.transcribe_stream(audio, options))

    def transcribe_stream(
        self, audio: Audio, options: TranscribeOptions
    ) -> Iterator[TranscriptSegment | Transcription]:
        """Each segment as it is decoded, then the whole transcription."""
        if audio.sample_rate != self.sample_rate:
            raise ValueError(f"audio must be at {self.sample_rate} Hz")
        with taking_turn(self.cpu):  # language detection and the VAD run here, at once
            segments, info = self._model.transcribe(
                audio.samples,
                language=options.language,
                initial_prompt=options.initial_prompt,
                hotwords=options.hotwords,
                word_timestamps=options.word_timestamps,
                beam_size=options.beam_size or self._beam_size,
                vad_filter=self._vad_filter if options.vad_filter is None else options.vad_filter,
                task=options.task,
                **({"temperature": options.temperature} if options.temperature else {}),
            )
        # The segments are a lazy generator, decoded as they are read: consume it here, on the
        # worker thread, within the decoding budget of this audio.
        from backend.app.backends.whisper_budget import DecodeBudget

        self._model.set_budget(DecodeBudget.for_audio(info.duration_after_vad))
        try:
            yield from self._collect(in_turns(segments, self.cpu), info, audio.duration)
        finally:
            self._model.set_budget(None)

    def align(self, audio: Audio, text: str) -> Words:
        """Where each word of `text` is heard in `audio` (speech of exactly that text, a synthesis):
        forced alignment with the model's alignment heads, the known text's tokens against the
        encoded audio, as Whisper's own word timestamps are found. Speech longer than one 30 s
        window is transcribed with word timestamps instead and its words matched to the text.
        Raises ValueError when there is nothing to place (no speech, no words, nothing heard)."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        samples = resample(audio, self.sample_rate).samples
        model = self._model
        language = script_language(text) or ("en" if not self.multilingual else None)
        if len(samples) > self.sample_rate * ALIGN_WINDOW_S:
            options = TranscribeOptions(language=language, word_timestamps=True, vad_filter=False)
            heard = self.transcribe(Audio(samples, self.sample_rate), options)
            found = [w for s in heard.segments for w in s.words]
            if not found:
                raise ValueError("nothing was heard in the speech to place the words on")
            return place_words(text, [Sound(w.word.lower(), w.start, w.end) for w in found], str.lower)
        with taking_turn(self.cpu):
            features = model.feature_extractor(samples)
            frames = min(features.shape[-1] - 1, model.feature_extractor.nb_max_frames)
            if frames <= 0 or not words_of(text):
                raise ValueError("no speech or no words to align")
            if language is None:  # a multilingual model, text in a Latin or other shared script
                language = model.detect_language(features=features[:, :frames])[0]
            tokenizer = Tokenizer(
                model.hf_tokenizer,
                self.multilingual,
                task="transcribe",
                language=language if self.multilingual else None,
            )
            tokens = tokenizer.encode(" " + text.strip())
            encoded = model.encode(pad_or_trim(features[:, :frames]))
            (found,) = model.find_alignment(tokenizer, [tokens], encoded, frames)
        if not found:
            raise ValueError("the alignment placed no words")
        sounds = [Sound(w["word"].lower(), float(w["start"]), float(w["end"])) for w in found]
        return place_words(text, sounds, str.lower)

    @staticmethod
    def _collect(
        segments: Iterable[Any], info: Any, duration: float
    ) -> Iterator[TranscriptSegment | Transcription]:
        collected = []
        for s in _cancellable(segments):
            segment = TranscriptSegment(
                start=round(s.start, 3),
                end=round(s.end, 3),
                text=s.text.strip(),
                words=tuple(
                    Word(round(w.start, 3), round(w.end, 3), w.word.strip(), round(w.probability, 4))
                    for w in (s.words or ())
                ),
                id=s.id,
                seek=s.seek,
                tokens=tuple(s.tokens),
                temperature=float(s.temperature or 0.0),
                avg_logprob=round(s.avg_logprob, 4),
                compression_ratio=round(s.compression_ratio, 4),
                no_speech_prob=round(s.no_speech_prob, 4),
            )
            collected.append(segment)
            yield segment
        yield Transcription(
            text=join_pieces([s.text for s in collected if s.text]),
            language=info.language,
            language_probability=round(info.language_probability, 4),
            duration=round(duration, 3),
            segments=tuple(collected),
        )


class ByLanguage:
    """`STT_MODEL_NAME=auto`: the English-only tiny model for audio said to be English, the
    multilingual base model for any other language and for audio of unknown language (which it
    identifies, so the turn knows the language it was spoken in)."""

    sample_rate = 16_000
    multilingual = True

    def __init__(self, english: WhisperBackend, multilingual: WhisperBackend) -> None:
        self.english, self.other = english, multilingual
        self.parts = (english, multilingual)
        self.info = ModelInfo(
            model=f"auto: {english.info.model} for English, {multilingual.info.model} otherwise",
            device=multilingual.info.device,
            id="whisper-auto",
        )

    def _for(self, options: TranscribeOptions) -> WhisperBackend:
        return self.english if options.language == "en" else self.other

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcription:
        return self._for(options).transcribe(audio, options)

    def transcribe_stream(
        self, audio: Audio, options: TranscribeOptions
    ) -> Iterator[TranscriptSegment | Transcription]:
        return self._for(options).transcribe_stream(audio, options)


def load(settings: Settings) -> WhisperBackend | ByLanguage:
    stt = settings.stt

    def backend(name: str) -> WhisperBackend:
        return WhisperBackend(
            name,
            settings.storage.models_dir,
            device=stt.device,
            compute_type=stt.compute_type,
            beam_size=stt.beam_size,
        )

    if stt.model_name == "auto":
        return ByLanguage(backend("embedded"), backend("base-multilingual"))
    return backend(stt.model_name)


def model_files(settings: Settings) -> ModelFiles | None:
    """The bundled tiny.en, the base model assembled into MODELS_DIR, or a local CTranslate2
    directory; None for a faster-whisper size (fetched at load). (`auto` is both bundled models:
    the registry asks for each.)"""
    name = settings.stt.model_name
    tiny = embedded.package_dir(embedded.WHISPER_TINY_EN[0]) / embedded.WHISPER_TINY_EN[1]
    tiny_files = dir_files(tiny) or (tiny / "model.bin",)
    base = settings.storage.models_dir / embedded.WHISPER_BASE_DIRNAME
    if name in TINY_EN_NAMES:
        return ModelFiles("whisper-tiny.en", "stt", tiny_files)
    if name == "base-multilingual":
        return ModelFiles("whisper-base-multilingual", "stt", dir_files(base), prepared_at_load=True)
    return local_dir("stt", name)
