"""Transcript optimisation with the chat model: clean up, formalise, punctuate, or a custom edit.

Runs one stateless request (no conversation history) on the chat model's worker. `punctuate` is
checked after the fact: if the model changed, added or dropped any word, its output is discarded and
the original text is returned with a warning, so that mode can never alter what was said.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Literal

from backend.app.core.errors import InvalidInputError, TextTooLongError
from backend.app.core.values import ChatMessage, GenerationOptions
from backend.app.services.chat import ChatService

OptimizeMode = Literal["optimize", "format", "punctuate", "custom"]

_KEEP_LANGUAGE = " Keep the text in its original language. Reply with the resulting text only."
_INSTRUCTIONS: dict[str, str] = {
    "optimize": (
        "You clean up speech-recognition transcripts: remove filler words (um, uh, like, 嗯, 那个), "
        "false starts and repetitions, and fix obvious recognition errors, keeping the speaker's "
        "meaning and wording otherwise." + _KEEP_LANGUAGE
    ),
    "format": (
        "You turn speech-recognition transcripts into formal written text: complete sentences, "
        "proper punctuation and capitalisation, paragraphs where the topic changes." + _KEEP_LANGUAGE
    ),
    "punctuate": (
        "Add punctuation and capitalisation to this transcript. Do not change, add, remove or reorder "
        "any word." + _KEEP_LANGUAGE
    ),
}
MAX_CUSTOM_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class Optimized:
    text: str
    warnings: list[str] = field(default_factory=list)


def word_sequence(text: str) -> str:
    """The letters and digits of `text` in order, lower-cased: what punctuation must not change."""
    return "".join(re.findall(r"\w", text)).replace("_", "").lower()


class TranscriptOptimizer:
    def __init__(self, chat: ChatService) -> None:
        self.chat = chat

    async def optimize(self, text: str, mode: OptimizeMode, custom_prompt: str | None = None) -> Optimized:
        if not text.strip():
            return Optimized("")
        if len(text) > self.chat.max_chars:
            raise TextTooLongError(f"text is longer than {self.chat.max_chars} characters")
        if mode == "custom":
            if not custom_prompt or not custom_prompt.strip():
                raise InvalidInputError("mode 'custom' needs custom_prompt (the instruction to apply)")
            if len(custom_prompt) > MAX_CUSTOM_PROMPT_CHARS:
                raise InvalidInputError(f"custom_prompt is longer than {MAX_CUSTOM_PROMPT_CHARS} characters")
            instruction = custom_prompt.strip() + _KEEP_LANGUAGE
        else:
            instruction = _INSTRUCTIONS[mode]
        messages = [ChatMessage("system", instruction), ChatMessage("user", text)]
        options = await asyncio.to_thread(self._budget, messages, text)
        result = (await self.chat.complete_whole(messages, options)).strip()
        if mode == "punctuate" and word_sequence(result) != word_sequence(text):
            return Optimized(
                text, ["the model changed words while punctuating; the original text is returned"]
            )
        if not result:
            return Optimized(text, ["the model returned nothing; the original text is returned"])
        return Optimized(result)

    def _budget(self, messages: list[ChatMessage], text: str) -> GenerationOptions:
        """Room for the rewritten text: half as many tokens again as the text, plus slack, within
        LLM_CONTEXT_TOKENS. The cost is counted in the model's tokens, not characters (a few
        thousand combining marks are one character each and several tokens each): a text whose
        prompt leaves no room for a rewrite as long as itself is refused before the model runs."""
        context = self.chat.settings.context_tokens
        tokens = self.chat.count_text_tokens(text)
        prompt = self.chat.count_tokens(messages)
        if prompt + tokens + 16 > context:
            raise TextTooLongError(
                f"the text is {tokens} tokens for the model; with the instruction and room for the "
                f"rewrite it does not fit the {context}-token context (LLM_CONTEXT_TOKENS): send less"
            )
        return GenerationOptions(
            max_tokens=min(2048, tokens * 3 // 2 + 16, context - prompt), temperature=0.0
        )
