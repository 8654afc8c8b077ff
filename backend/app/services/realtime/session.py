"""A realtime voice session: PCM in, turn-taking, streamed replies out, barge-in.

A transport (api/protocols/) turns its protocol's messages into calls here, and its `Listener`
(services/realtime/listener.py) turns what happens back into that protocol's messages: our own
protocol (docs/realtime.md) or OpenAI's Realtime protocol. The session decides when a turn ends
(turn-taking); `Turns` (services/realtime/turns.py) runs what a turn then does, in order.

A turn ends when the VAD hears enough silence, or when the client commits its audio (with the
VAD off, only then). Speech that starts while a reply is under way cancels it, as `cancel` does —
the LLM stops generating and no further TTS is done — and the reply is stored as far as the
listener heard it.

Pre-emptive replies (WS_PREEMPTIVE_REPLIES): the trailing silence that may end the turn is used.
At its first silent window the utterance so far is transcribed and, on that transcript, a reply is
begun at once: the LLM generates and its first piece is synthesised, held back from the client.
If the silence lasts and the turn ends, the turn takes that reply over (sent at once, stored once);
if the user goes on speaking, it is cancelled and leaves nothing stored.

Live partial transcripts (WS_PARTIAL_TRANSCRIPT_S): while the user speaks, the utterance so far is
transcribed again after each interval of new speech, when the STT model has nothing else to do
and the user is not pausing (a pause is when the turn's own transcription runs).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from backend.app.audio.turn import EndOfTurn
from backend.app.audio.types import Audio
from backend.app.audio.vad import SAMPLE_RATE, SileroVAD, VADEvent, VoiceActivityDetector
from backend.app.core.config import RealtimeSettings
from backend.app.core.errors import AppError
from backend.app.core.values import ToolCall
from backend.app.services.conversation import ConversationService
from backend.app.services.realtime.config import ReplyOptions, SessionConfig, SessionError
from backend.app.services.realtime.listener import CutReason, Listener, TimedTranscription
from backend.app.services.realtime.reply import EarlyReply
from backend.app.services.realtime.turns import Turns, retrieve
from backend.app.services.stt import STTService
from backend.app.services.turn_events import Commitment
from backend.app.text.endings import sounds_unfinished

logger = logging.getLogger(__name__)

WORDS_TIMEOUT_S = 1.0
"""How long a pause's words may take to judge before the voice decides alone."""

MIN_COMMIT_S = 0.1
"""The shortest audio a commit accepts (OpenAI's rule too)."""


class RealtimeSession:
    """One client's session. `configure` it, feed it 16 kHz audio (`feed`); `commit`, `clear`,
    `add_text`, `respond` and `cancel` are the client's explicit requests; `stop` ends the input
    (the turn under way finishes); `close` is the end, however it came (cancels what is running)."""

    def __init__(
        self,
        conversation: ConversationService,
        stt: STTService,
        vad: SileroVAD,
        settings: RealtimeSettings,
        listener: Listener,
        conversation_id: str = "",
        end_of_turn: EndOfTurn | None = None,
    ) -> None:
        self.settings = settings
        self.turns = Turns(conversation, stt, listener, conversation_id)
        self._conversation = conversation
        self._stt = stt
        self._vad_model = vad
        self._end_of_turn = end_of_turn
        self._listener = listener
        self._detector: VoiceActivityDetector | None = None
        self._detecting = asyncio.Lock()  # one reader of the detector at a time
        self._heard_finished = False  # semantic turns: the voice sounded finished in this pause
        self._endings: set[asyncio.Task[None]] = set()  # ends waiting for the detector
        self._closed = False
        self._buffer: list[np.ndarray] = []  # input awaiting a commit, with the VAD off
        self._fed = 0  # samples received, for the input's clock
        self._speculative: asyncio.Task[TimedTranscription] | None = None
        self._early: EarlyReply | None = None
        self._partial: asyncio.Task[None] | None = None
        self._partial_at = 0.0
        self._utterances = 0

    @property
    def config(self) -> SessionConfig:
        return self.turns.config

    @property
    def conversation_id(self) -> str:
        return self.turns.conversation_id

    @conversation_id.setter
    def conversation_id(self, value: str) -> None:
        self.turns.conversation_id = value

    @property
    def busy(self) -> bool:
        """A turn is being transcribed or answered."""
        return self.turns.busy

    @property
    def replying(self) -> bool:
        """A reply is under way (or the turn that will be answered): a cancel can still cut it."""
        return self.turns.replying

    @property
    def input_s(self) -> float:
        """Seconds of audio received so far."""
        return self._fed / SAMPLE_RATE

    @property
    def output_sample_rate(self) -> int:
        """The rate of the reply audio the TTS engine speaks."""
        return self._conversation.output_sample_rate

    # --- configuration ----------------------------------------------------------------------------

    def configure(self, config: SessionConfig) -> None:
        """Apply `config`, checked (voice, language: AppError). A change of turn detection
        starts it afresh: audio of an utterance in progress is dropped."""
        self._conversation.check_voice(config.reply.voice)
        self._stt.check_options(config.options)
        if config.vad != self.config.vad or (self._detector is None and config.vad is not None):
            self._cancel_speculative()
            self._cancel_partial()
            self._buffer = []
            self._detector = None
            if config.vad is not None:
                self._detector = self._new_detector(config)
        self.turns.config = config

    async def keep_instructions(self, instructions: str) -> None:
        """The session's instructions become its conversation's system prompt (kept with it)."""
        await self._conversation.keep_system_prompt(self.conversation_id, instructions)

    # --- input ------------------------------------------------------------------------------------

    async def feed(self, samples: np.ndarray) -> None:
        """Audio at 16 kHz, float32 mono, in any chunk sizes."""
        self._fed += len(samples)
        if self._detector is None:
            held = sum(len(chunk) for chunk in self._buffer) + len(samples)
            limit = self._stt.max_audio_s
            if held > limit * SAMPLE_RATE:
                raise SessionError(
                    f"the input audio buffer holds at most {limit:g} s (MAX_AUDIO_SECONDS); commit or "
                    "clear it; this audio was dropped",
                    "input_audio_buffer_full",
                )
            self._buffer.append(samples)
            return
        async with self._detecting:
            detector = self._detector
            events = await asyncio.to_thread(detector.feed, samples)
            while True:
                for event in events:
                    await self._on_vad(event)
                if detector is not self._detector or not detector.pending:
                    break
                events = await asyncio.to_thread(detector.feed, np.zeros(0, np.float32))
        self._maybe_partial()

    async def commit(self) -> None:
        """End the user's turn now (the VAD's own end, or the only one with the VAD off)."""
        if self._detector is not None:
            async with self._detecting:  # (a turn the session ended meanwhile leaves none)
                if not self._detector.speaking:
                    raise SessionError(
                        "no speech to commit: the input audio buffer is empty",
                        "input_audio_buffer_commit_empty",
                    )
                for event in self._detector.flush():
                    await self._on_vad(event, committed=True)
            return
        audio = Audio(np.concatenate(self._buffer) if self._buffer else np.zeros(0, np.float32), SAMPLE_RATE)
        if audio.duration < MIN_COMMIT_S:
            raise SessionError(
                f"the input audio buffer holds {audio.duration * 1000:.0f} ms; a commit needs at least "
                f"{MIN_COMMIT_S * 1000:.0f} ms",
                "input_audio_buffer_commit_empty",
            )
        self._buffer = []
        await self._end_turn(audio, None, time.perf_counter(), None, committed=True)

    def clear(self) -> None:
        """Drop the audio not yet committed (and what was begun on it)."""
        self._cancel_speculative()
        self._cancel_partial()
        self._buffer = []
        if self._detector is not None and self.config.vad is not None:
            self._detector = self._new_detector(self.config)

    async def add_text(self, text: str) -> None:
        """A typed user message: stored in order with the session's other items (not answered
        until the client asks)."""
        await self.turns.add_text(text)

    async def add_tool_result(self, call: ToolCall, output: str) -> None:
        """The result of a call of the client's own tool: stored in order with the other items."""
        await self.turns.add_tool_result(call, output)

    async def respond(self, options: ReplyOptions | None = None) -> None:
        """A reply to the conversation as stored (the client asks for it)."""
        self.turns.respond(options or self.config.reply)

    async def cancel(self, reason: CutReason = "client_cancelled") -> bool:
        """Stop the reply under way; False when there is none."""
        return await self.turns.cut(reason)

    def limit_heard(self, seconds: float) -> None:
        """The client played only `seconds` of the reply under way (it truncated it)."""
        self.turns.reply.limit_heard(seconds)

    async def stop(self) -> None:
        """End of input: an utterance in progress is answered, and the turn under way finishes."""
        if self._detector is not None:
            async with self._detecting:
                for event in self._detector.flush():
                    await self._on_vad(event)
        await self.turns.finish()

    async def close(self) -> None:
        """Cancel whatever is running (a reply is stored as far as it was heard; typed items
        already sent are stored)."""
        self._closed, self._heard_finished = True, False
        early = [self._early.transcription, self._early.task] if self._early else []
        tasks = [t for t in (self._speculative, self._partial, *self._endings, *early) if t is not None]
        for task in tasks:
            if not task.done():
                task.cancel()
        await self.turns.close()
        if tasks:
            await asyncio.wait(tasks)

    # --- turn-taking ------------------------------------------------------------------------------

    async def _on_vad(self, event: VADEvent, committed: bool = False) -> None:
        if event.kind == "speech_start":
            self._utterances += 1
            self._partial_at = 0.0
            pad_s = self.config.vad.speech_pad_ms / 1000 if self.config.vad else 0.0
            assert self._detector is not None
            await self._listener.speech_started(max(0.0, self.input_s - self._detector.utterance_s + pad_s))
            if self.config.interrupt:
                await self.turns.cut("turn_detected")
        elif event.kind == "pause" and event.audio is not None:
            self._cancel_speculative()
            self._cancel_partial()
            self._heard_finished = False
            # Transcribe during the trailing silence; used if the turn ends without more speech.
            self._speculative = asyncio.create_task(self.turns.transcribe(event.audio))
            self._speculative.add_done_callback(retrieve)
            self._speculative.add_done_callback(self._transcript_ready)
            if self.settings.preemptive_replies and self.config.respond and not self.busy:
                self._early = EarlyReply(self._speculative, Commitment(), asyncio.Queue())
                self._early.task = asyncio.create_task(self.turns.early_reply(self._early))
        elif event.kind == "finished":
            self._heard_finished = True
            await self._end_if_agreed()
        elif event.kind == "resume":
            self._heard_finished = False
            self._cancel_speculative()
        elif event.kind == "speech_end" and event.audio is not None:
            self._cancel_partial()
            self._heard_finished = False
            speculative, self._speculative = self._speculative, None
            early, self._early = self._early, None
            await self._end_turn(event.audio, speculative, time.perf_counter(), early, committed)

    async def _end_turn(
        self,
        utterance: Audio,
        speculative: asyncio.Task[TimedTranscription] | None,
        ended_at: float,
        early: EarlyReply | None,
        committed: bool,
    ) -> None:
        await self._listener.speech_stopped(utterance, self.input_s, committed)
        self.turns.begin(utterance, speculative, ended_at, early)

    def _new_detector(self, config: SessionConfig) -> VoiceActivityDetector:
        assert config.vad is not None
        judge = self._end_of_turn.finished if self._end_of_turn is not None else None
        return VoiceActivityDetector(self._vad_model.stream(), config.vad, judge)

    # --- semantic turns: the voice and the words agree ------------------------------------------

    def _transcript_ready(self, task: asyncio.Task[TimedTranscription]) -> None:
        """The words of the pause are known: the turn may end now, if the voice said so first."""
        if task is self._speculative and self._heard_finished and not self._closed and not task.cancelled():
            ending = asyncio.create_task(self._end_when_agreed())
            self._endings.add(ending)
            ending.add_done_callback(self._endings.discard)
            ending.add_done_callback(retrieve)

    async def _end_when_agreed(self) -> None:
        try:
            async with self._detecting:
                await self._end_if_agreed()
        except AppError as e:  # e.g. the store refused the turn: the client hears it
            await self._listener.reply_failed(e)

    async def _end_if_agreed(self) -> None:
        """End the turn (holding the detector) once the end-of-turn model heard a finished speaker
        and the words said so far do not leave a sentence hanging ("...a table for"). Until the
        words are known, wait for them: the reply cannot start sooner anyway. Words that could not
        be transcribed leave the voice to decide; words that hang wait for more speech, or for
        the silence ceiling (TURN_MAX_SILENCE_MS)."""
        detector, words = self._detector, self._speculative
        if detector is None or not detector.speaking or not self._heard_finished or words is None:
            return
        if not words.done():
            return  # `_transcript_ready` comes back
        if not words.cancelled() and words.exception() is None:
            transcription, _ = words.result()
            if sounds_unfinished(transcription.text, transcription.language):
                return
            if await self._words_hang(transcription.text, transcription.language):
                return
            if words is not self._speculative or not self._heard_finished or not detector.speaking:
                return  # the speaker went on meanwhile
        for event in detector.flush():
            await self._on_vad(event)

    async def _words_hang(self, text: str, language: str | None) -> bool:
        """Whether the words' model reads `text` as a message that goes on (its end-of-message
        probability under TURN_WORDS_THRESHOLD). A model that is missing, slow or failing
        leaves the turn to the voice and the word list."""
        judge = self._end_of_turn.words if self._end_of_turn is not None else None
        assert self.config.vad is not None
        floor = self.config.vad.turn_words_threshold
        if judge is None or floor <= 0:
            return False
        try:
            async with asyncio.timeout(WORDS_TIMEOUT_S):
                probability = await asyncio.to_thread(judge.finished, text, language)
        except Exception as e:  # TimeoutError included
            logger.warning(
                "the words' end-of-turn model did not answer (%s); the voice decides", e or type(e)
            )
            return False
        return probability is not None and probability < floor

    def _cancel_speculative(self) -> None:
        """The user goes on: the transcript so far, and any reply begun on it, are thrown away."""
        self._heard_finished = False
        if self._speculative is not None:
            self._speculative.cancel()
            self._speculative = None
        if self._early is not None:
            self._early.cancel()
            self._early = None

    # --- partial transcripts ----------------------------------------------------------------------

    def _maybe_partial(self) -> None:
        every = self.config.partials_every_s
        detector = self._detector
        # Not in a pause: that is when the turn's own transcription (and the reply begun on it)
        # runs, and a partial would compete with them for the CPU.
        if not every or detector is None or not detector.in_speech:
            return
        if self._partial is not None and not self._partial.done():
            return
        speech_s = detector.utterance_s
        # Only when the STT model is idle: a partial never delays a turn's own transcription.
        if speech_s - self._partial_at < every or not self._stt.idle:
            return
        audio = detector.current()
        if audio is None:
            return
        self._partial_at = speech_s
        self._partial = asyncio.create_task(self._run_partial(audio, self._utterances))

    async def _run_partial(self, audio: Audio, utterance: int) -> None:
        try:
            transcription = await self._stt.transcribe_audio(audio, self.config.options)
        except AppError:
            return  # a partial is a courtesy: the final transcript still comes
        detector = self._detector
        if (
            utterance == self._utterances
            and detector is not None
            and detector.speaking
            and transcription.text
        ):
            await self._listener.partial_transcript(transcription.text)

    def _cancel_partial(self) -> None:
        if self._partial is not None and not self._partial.done():
            self._partial.cancel()
        self._partial = None
