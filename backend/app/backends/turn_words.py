"""The words' half of semantic turns, read by a language model: how likely the user's message is to
end after the words heard so far.

A chat model closes each message with a token of its own (`<|im_end|>` for SmolLM2). Given the chat
template up to the user's words, the probability that the model writes that token next, or a
sentence's closing punctuation, is its reading of whether the message is complete: after "Can you
tell me" or "book a table for" it is near zero, after "What do bees make" it is not. LiveKit's turn
detector scores a fine-tuned SmolLM this way; here the embedded SmolLM2-135M-Instruct is used as it
ships, on one thread, in tens of milliseconds. The word list of `text/endings.py` still decides
what it lists; this catches the rest ("I was wondering", "Who painted", "What is a good name").

The transcript's own closing punctuation is taken off first: the STT ends whatever it heard with a
full stop or a question mark ("Who painted?"), which says nothing about the speaker. English only:
the model knows little else, and other languages are left to the voice.
"""

from __future__ import annotations

import re
from pathlib import Path

from backend.app.backends import embedded
from backend.app.backends.llamacpp_llm import LlamaCppChatBackend
from backend.app.core.values import ChatMessage

SYSTEM = "You are a helpful voice assistant."
"""A fixed system message: the judge reads the user's words the same way whatever the server's
LLM_SYSTEM_PROMPT says, and the prompt cache keeps this prefix."""
TOP_TOKENS = 40
MIN_WORDS = 3
"""Fewer words are left to the voice: "Stop." or "No." read as unsure to the model (a few
thousandths), and a short answer is where waiting is felt most."""
_CLOSING = re.compile(r"[\s.?!。？！…,;:，；：]+$")
_SENTENCE_END = frozenset({".", "?", "!", "...", "…"})


class WordsEndOfTurn:
    """SmolLM2-135M asked, of the words so far, whether the user's message ends there."""

    model = "SmolLM2-135M-Instruct (end-of-message probability)"

    def __init__(self, models_dir: Path | None = None) -> None:
        self._llm = LlamaCppChatBackend(
            model=embedded.SMALL_LLM,
            context_tokens=512,
            threads=1,
            prompt_cache_mb=8,
            models_dir=models_dir,
        )

    def finished(self, words: str, language: str | None = "en") -> float | None:
        """The probability that the message ends after `words`; None when there is nothing to
        judge (fewer than MIN_WORDS words, another language). Blocking: tens of milliseconds."""
        text = _CLOSING.sub("", words.strip())
        if len(text.split()) < MIN_WORDS or language not in (None, "en"):
            return None
        messages = [ChatMessage("system", SYSTEM), ChatMessage("user", text)]
        tokens = self._llm.next_tokens(messages, TOP_TOKENS)  # llama.cpp serves one read at a time
        return min(1.0, sum(p for token, p in tokens if _closes(token)))

    def close(self) -> None:
        self._llm.close()


def _closes(token: str) -> bool:
    """A token that ends the message: the template's control token, or closing punctuation."""
    stripped = token.strip()
    return stripped.startswith("<|") or stripped in _SENTENCE_END
