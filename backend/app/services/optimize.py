"""Transcript optimisation with the chat model: fix recognition slips, punctuation or layout."""

from __future__ import annotations

from typing import Literal

from backend.app.backends.protocols import ChatMessage, GenerationOptions
from backend.app.services.chat import ChatService

OptimizeMode = Literal["optimize", "format", "punctuate"]

_INSTRUCTIONS: dict[str, str] = {
    "optimize": (
        "You correct speech-recognition transcripts. Fix misheard words, grammar and punctuation "
        "while keeping the speaker's meaning and language. Reply with the corrected text only."
    ),
    "format": (
        "You format speech-recognition transcripts for reading: add punctuation, capital letters "
        "and paragraph breaks; do not change the words. Reply with the formatted text only."
    ),
    "punctuate": (
        "Add punctuation and capitalisation to this transcript without changing, adding or "
        "removing any word. Reply with the punctuated text only."
    ),
}


class TranscriptOptimizer:
    """Runs one stateless request on the chat model (no conversation history)."""

    def __init__(self, chat: ChatService) -> None:
        self.chat = chat

    async def optimize(self, text: str, mode: OptimizeMode) -> str:
        if not text.strip():
            return ""
        messages = [ChatMessage("system", _INSTRUCTIONS[mode]), ChatMessage("user", text)]
        # Room for the rewritten text: roughly its own length in tokens, plus slack.
        options = GenerationOptions(max_tokens=min(2048, len(text) // 2 + 64), temperature=0.0)
        return await self.chat.worker.run(self.chat.backend.chat, messages, options)
