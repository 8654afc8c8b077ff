"""The default STT on a CPU: Moonshine for the short English clips it hears sooner and better,
Whisper for everything else.

With `STT_MODEL_NAME=embedded` (the default) or `auto`, `STT_ENGINE=auto` and Whisper on the CPU,
the registry puts Moonshine base in front of the configured Whisper (`registry.load_stt`). A
request goes to Moonshine when all of these hold, and to Whisper, unchanged, otherwise:

- it is English: `language=en`, or no language with a Whisper that hears English only (tiny.en;
  with `auto`, audio of unknown language goes to Whisper base, which identifies it);
- the audio is at most `STT_MOONSHINE_MAX_SECONDS` long: Moonshine's encoder reads every sample
  and its decoder attends to all of them, so its cost grows with the clip, while Whisper's
  encoder always reads a 30 s window; past the bound Whisper is the cheaper one;
- it asks for nothing Moonshine lacks: word timestamps, a prompt or hotwords, translation, a beam
  wider than one, sampling at a temperature.

The realtime route's partial transcripts are transcriptions too and take the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

from backend.app.audio.types import Audio
from backend.app.backends.protocols import SpeechToText
from backend.app.core.values import ModelInfo, TranscribeOptions, Transcription, TranscriptSegment


class ShortClipRouter:
    """Moonshine for short English clips it can serve; `whisper` (tiny.en, or `auto`'s pair) for
    the rest. It is itself a `SpeechToText`: services see one engine with Whisper's languages."""

    def __init__(self, moonshine: SpeechToText, whisper: SpeechToText, max_seconds: float) -> None:
        if moonshine.sample_rate != whisper.sample_rate:
            raise ValueError("Moonshine and Whisper must hear at the same rate")
        self.moonshine, self.whisper, self.max_seconds = moonshine, whisper, max_seconds
        self.parts = (moonshine, whisper)
        self.sample_rate = whisper.sample_rate
        self.multilingual = whisper.multilingual
        pair = f"{moonshine.info.model} for English up to {max_seconds:g} s, {whisper.info.model} otherwise"
        self.info = ModelInfo(
            model=pair,
            device=f"{moonshine.info.device}; {whisper.info.device}",
            id=whisper.info.id,  # the name clients already ask for; /v1/models lists it
        )

    def moonshine_takes(self, audio: Audio, options: TranscribeOptions) -> bool:
        """Whether this request goes to Moonshine (see the module's docstring)."""
        english = options.language == "en" or (options.language is None and not self.whisper.multilingual)
        return (
            english
            and audio.duration <= self.max_seconds
            and not options.word_timestamps
            and not options.initial_prompt
            and not options.hotwords
            and options.task == "transcribe"
            and (options.beam_size or 1) <= 1
            and not options.temperature
        )

    def engine_for(self, audio: Audio, options: TranscribeOptions) -> SpeechToText:
        return self.moonshine if self.moonshine_takes(audio, options) else self.whisper

    def transcribe(self, audio: Audio, options: TranscribeOptions) -> Transcription:
        return self.engine_for(audio, options).transcribe(audio, options)

    def transcribe_stream(
        self, audio: Audio, options: TranscribeOptions
    ) -> Iterator[TranscriptSegment | Transcription]:
        return self.engine_for(audio, options).transcribe_stream(audio, options)
