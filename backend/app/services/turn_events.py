"""What a turn is asked and what it yields: the `ReplyRequest` every transport fills in, its
events (`Heard`, the TTS stream's `ReplyText` and `ReplyAudio`, then the `Turn`), the pieces a
listener heard, the go-ahead of a pre-emptive reply, and a reply in text only shaped as a speech
stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from backend.app.audio.encode import AudioFormat
from backend.app.audio.types import Audio
from backend.app.core.admission import Ticket
from backend.app.core.tools import ToolRequest
from backend.app.core.values import ToolCall, Transcription
from backend.app.core.worker import Admission
from backend.app.services.history import ConversationHistory
from backend.app.services.speech import ReplyAudio, ReplyText
from backend.app.storage.rows import Turn as StoredTurn
from backend.app.text.segment import join_pieces
from backend.app.text.word_timing import heard_words, joined
from backend.app.voices.library import VoiceInfo


@dataclass(frozen=True)
class Turn:
    transcript: str
    reply: str
    conversation_id: str | None
    audio_name: str | None
    timings: dict[str, float]
    interrupted: bool = False
    usage: Usage | None = None
    """Tokens the reply took, when `ReplyRequest.usage` asked for them."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Calls of the client's tools the reply ends with (`ReplyRequest.tools`): the client runs them."""
    tools: tuple[dict[str, Any], ...] = ()
    """The server-side (MCP) calls the reply made, with their results, as stored."""


@dataclass(frozen=True)
class Usage:
    """The LLM tokens of a reply: its prompt (the context it was given) and its output."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Heard:
    """The user's turn is stored; the reply follows. (First event of `reply_to`.)"""

    text: str


TurnEvent = Heard | ReplyText | ReplyAudio | Turn
"""`ReplyText` and `ReplyAudio` are the TTS stream's own events (services/speech.py)."""

PlayedSeconds = Callable[[], float]
"""How many seconds of the reply's audio the listener has heard so far."""


@dataclass
class TurnSlot:
    """A spoken turn's places: its ticket at the turn gate, and its LLM slot, reserved in order."""

    ticket: Ticket
    llm: Admission

    def release(self) -> None:
        """Give both back (idempotent); an LLM slot the reply already used is not counted twice."""
        self.llm.release()
        self.ticket.release()


@dataclass
class ReplyRequest:
    """One reply, as every transport asks for it (`ConversationService.reply_to`): the HTTP
    turn, both realtime WebSockets and Wyoming's conversation agent fill in what they know."""

    conversation_id: str
    language: str | None = None
    """The language the user spoke (None: typed text gives its own script's, else English)."""
    voice: str | None = None
    """None: the conversation's voice, else one of `language`."""
    speak: bool = True
    """False: a reply in text only (no TTS, no audio stored)."""
    system_prompt: str | None = None
    """Replaces the conversation's for this reply."""
    max_tokens: int | None = None
    """Shortens the reply (never beyond LLM_MAX_TOKENS)."""
    usage: bool = False
    """Count the reply's tokens into `Turn.usage`."""
    audio_format: AudioFormat = "wav"
    """The stored reply audio's format."""
    asked: float = field(default_factory=time.time)
    """When the user's turn was made (wall clock; stored with it)."""
    started: float = field(default_factory=time.perf_counter)
    """When the user finished speaking (perf_counter): `first_audio_ms` counts from it."""
    timings: dict[str, float] = field(default_factory=dict)
    """The turn's timings so far (`stt_ms`); the reply adds its own."""
    played: PlayedSeconds | None = None
    """How much of the reply the listener heard, for a reply closed early (None: all it was sent)."""
    slot: TurnSlot | None = None
    """The places `check_ready` took already (else `reply_to` takes them)."""
    commitment: Commitment | None = None
    """Makes the reply pre-emptive: nothing is stored until it is confirmed."""
    tools: ToolRequest | None = None
    """The client's own tools (OpenAI Realtime's function tools): a call to one ends the reply."""


class ReplyEvents:
    """A reply's events (`ConversationService.reply_to`), and its places at the turn gate: closing
    it stops the reply and gives the places back, even when it was closed before it began (an
    unstarted generator's own `finally` never runs)."""

    def __init__(self, events: AsyncGenerator[TurnEvent, None], slot: TurnSlot) -> None:
        self._events = events
        self._slot = slot

    def __aiter__(self) -> ReplyEvents:
        return self

    async def __anext__(self) -> TurnEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            self._slot.release()


@dataclass
class TurnStream:
    """A turn whose transcript is known and whose reply is still to come (`events`)."""

    transcription: Transcription
    conversation_id: str | None
    events: ReplyEvents | AsyncGenerator[TurnEvent, None]


def heard_pieces(spoken: list[ReplyAudio], played_s: float | None) -> list[ReplyAudio]:
    """The pieces the listener heard at least the start of (all of them when `played_s` is None)."""
    if played_s is None:
        return spoken
    heard, offset = [], 0.0
    for piece in spoken:
        if offset >= played_s:
            break
        heard.append(piece)
        offset += piece.audio.duration
    return heard


@dataclass(frozen=True)
class HeardReply:
    """What the listener heard of a reply: its text and its audio."""

    text: str
    audio: list[Audio]


def heard_reply(spoken: list[ReplyAudio], played_s: float | None) -> HeardReply:
    """The reply as far as the listener heard it, `played_s` into its audio (None: all it was
    sent). Whole pieces heard count whole; of the piece playing at the cut, the words that had
    ended by then (its audio is cut there too), or the whole piece when its words' times are not
    known."""
    pieces = heard_pieces(spoken, played_s)
    # In words when they are known (the text as spoken: markup and emoji left out), so that the
    # whole pieces and the one cut read alike.
    texts = [joined([w.word for w in p.audio.words]) if p.audio.words else p.text for p in pieces]
    audio = [piece.audio for piece in pieces]
    if played_s is not None and pieces:
        last = pieces[-1].audio
        into = played_s - sum(piece.audio.duration for piece in pieces[:-1])
        if into < last.duration and last.words is not None:
            words = heard_words(last.words, into)
            texts[-1] = joined([w.word for w in words])
            audio[-1] = last.with_samples(last.samples[: round(into * last.sample_rate)])
    return HeardReply(join_pieces([text for text in texts if text]), audio)


class Commitment:
    """The go-ahead for a pre-emptive reply (`ReplyRequest.commitment`): the realtime session
    starts a reply during the silence that may end the user's turn, and confirms it when the turn
    does end. Until then nothing of the turn is stored."""

    def __init__(self) -> None:
        self._confirmed = asyncio.Event()
        self.at: float | None = None
        """When the user finished speaking (perf_counter), once confirmed."""

    @property
    def confirmed(self) -> bool:
        return self._confirmed.is_set()

    def confirm(self, at: float) -> None:
        self.at = at
        self._confirmed.set()

    async def then_store(self, history: ConversationHistory, conversation_id: str, user: StoredTurn) -> None:
        """Once confirmed, store the user's turn (the reply is stored after it)."""
        await self._confirmed.wait()
        await history.add_turns(conversation_id, user)


class Unspoken:
    """A reply in text only, in the shape of a speech stream: its deltas as `ReplyText`."""

    voice: VoiceInfo | None = None
    first_s: float | None = None
    busy_s = 0.0

    def __init__(self, deltas: AsyncGenerator[str, None]) -> None:
        self._deltas = deltas

    def __aiter__(self) -> AsyncGenerator[ReplyText, None]:
        return self._events()

    async def _events(self) -> AsyncGenerator[ReplyText, None]:
        async for delta in self._deltas:
            yield ReplyText(delta)

    async def aclose(self) -> None:
        await self._deltas.aclose()
