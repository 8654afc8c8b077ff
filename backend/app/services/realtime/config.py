"""How a realtime session takes turns and makes replies (each protocol sets it from its own
messages), and the error for a request the session cannot do now."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.app.core.config import VADSettings
from backend.app.core.tools import ToolRequest
from backend.app.core.values import TranscribeOptions


class SessionError(Exception):
    """A request the session cannot do now (nothing to commit, no reply to cancel...): the
    protocol tells the client, and the session goes on."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


@dataclass(frozen=True)
class ReplyOptions:
    """How replies are made: the voice (None: the conversation's or the default), spoken or in
    text only, the system prompt (None: the conversation's or LLM_SYSTEM_PROMPT), a shorter
    token limit than LLM_MAX_TOKENS."""

    voice: str | None = None
    speak: bool = True
    instructions: str | None = None
    max_tokens: int | None = None
    tools: ToolRequest | None = None
    """The client's own function tools and how the model may use them (None: none)."""


@dataclass(frozen=True)
class SessionConfig:
    """How a session takes turns; each protocol sets it from its own messages."""

    vad: VADSettings | None = field(default_factory=VADSettings)
    """Turn detection; None: a turn ends only when the client commits its audio."""
    respond: bool = True
    """Answer each turn (False: transcribe and store it only, as dictation does)."""
    interrupt: bool = True
    """Speech that starts during a reply cuts it."""
    options: TranscribeOptions = field(default_factory=TranscribeOptions)
    reply: ReplyOptions = field(default_factory=ReplyOptions)
    partials_every_s: float = 0.0
    """Live partial transcripts after each this many seconds of new speech (0: none)."""
    usage: bool = False
    """Count each reply's tokens (`Turn.usage`)."""
