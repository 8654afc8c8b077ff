"""What one transcription may spend in Whisper's decoder, bounded by the audio it decodes.

Whisper decodes each 30 s window, and when the text comes out too repetitive or unlikely it decodes
the window again at rising temperatures (0.2 ... 1.0, five sampled hypotheses each). faster-whisper
lets every attempt run to the model's whole text context (448 tokens). Ordinary speech needs one
attempt of a few dozen tokens a window; audio that drives the model into a repetition loop (a
syllable played over and over: a few AAC frames repeated) fills the context on every attempt.
Measured on tiny.en, 58 s of such audio took 20-36 s of decoding, 58 s of speech about 4 s
(bench/results/stt_cost.md). So each transcription gets a budget from its own duration:

- a window may produce at most `MAX_NEW_TOKENS` (OpenAI's reference decoder stops there too: half
  the text context), and a short clip as many for its length (`TOKENS_PER_SECOND`, with a margin);
- the temperature fallbacks of a whole transcription are a pool, `FALLBACKS_PER_WINDOW` per 30 s of
  speech plus one: a window that needs them takes them while the pool lasts, and once it is spent
  the remaining windows keep their first (temperature 0) result.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, replace
from typing import Any

from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

WINDOW_S = 30.0
MAX_NEW_TOKENS = 224
"""Tokens one window may produce (the reference decoder's sample length; speech uses a third)."""
TOKENS_PER_SECOND = 8
"""A clip shorter than a window may produce this many a second (plus `MIN_NEW_TOKENS`): the density
the reference allows a whole window (224 in 30 s), about twice what fast English speech needs.
Text cut there is not lost while timestamps are on: the next window starts at the last one."""
MIN_NEW_TOKENS = 32
FALLBACKS_PER_WINDOW = 1


@dataclass
class DecodeBudget:
    """The decoder work one transcription may still do."""

    max_new_tokens: int
    fallbacks: int
    spent_warned: bool = False

    @classmethod
    def for_audio(cls, speech_seconds: float) -> DecodeBudget:
        windows = max(1, math.ceil(speech_seconds / WINDOW_S))
        tokens = MIN_NEW_TOKENS + math.ceil(TOKENS_PER_SECOND * speech_seconds)
        return cls(max_new_tokens=min(MAX_NEW_TOKENS, tokens), fallbacks=FALLBACKS_PER_WINDOW * windows + 1)


class BoundedWhisperModel(WhisperModel):  # type: ignore[misc]
    """faster-whisper's model, its decoding held to the budget of the transcription in progress.

    The budget is per thread: `set_budget()` sets it for the transcription the calling thread is
    about to consume (faster-whisper's segments are a lazy generator, decoded as they are read)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._budgets = threading.local()

    def set_budget(self, budget: DecodeBudget | None) -> None:
        self._budgets.current = budget

    def generate_with_fallback(
        self, encoder_output: Any, prompt: list[int], tokenizer: Any, options: Any
    ) -> Any:
        budget: DecodeBudget | None = getattr(self._budgets, "current", None)
        if budget is None:
            return super().generate_with_fallback(encoder_output, prompt, tokenizer, options)
        prompt = self._leave_room(prompt, tokenizer, options, budget.max_new_tokens)
        room = self.max_length - len(prompt)
        new_tokens = min(budget.max_new_tokens, options.max_new_tokens or room, room)
        temperatures = list(options.temperatures)[: 1 + budget.fallbacks]
        bounded = replace(
            options,
            temperatures=temperatures,
            # A prompt that fills the context leaves no room: faster-whisper's own limit then applies.
            max_new_tokens=new_tokens if new_tokens > 0 else options.max_new_tokens,
        )
        result = super().generate_with_fallback(encoder_output, prompt, tokenizer, bounded)
        temperature = result[2]
        attempts = temperatures.index(temperature) + 1 if temperature in temperatures else len(temperatures)
        budget.fallbacks -= attempts - 1
        cut_short = attempts == len(temperatures) < len(options.temperatures)
        if cut_short and not budget.spent_warned:  # this window wanted more fallbacks than were left
            budget.spent_warned = True
            log.info(
                "a transcription's decoding fallbacks are spent: its windows keep the best result so far"
            )
        return result

    def _leave_room(self, prompt: list[int], tokenizer: Any, options: Any, wanted: int) -> list[int]:
        """The prompt, its oldest context dropped so that the window can write `wanted` tokens.

        faster-whisper builds `[sot_prev, hotwords..., previous text..., sot, ...]`, each part up to
        half the context: hotwords and an initial prompt at their limits filled all of it, and the
        window came out empty. The previous text gives way first (its oldest tokens), then the
        hotwords' tail."""
        excess = len(prompt) + wanted - self.max_length
        if excess <= 0 or not prompt or prompt[0] != tokenizer.sot_prev or tokenizer.sot not in prompt:
            return prompt
        start = prompt.index(tokenizer.sot)
        hotwords = 0
        if options.hotwords and not options.prefix:
            hotwords = min(len(tokenizer.encode(" " + options.hotwords.strip())), self.max_length // 2 - 1)
        previous = prompt[1 + hotwords : start]
        cut_previous = min(excess, len(previous))
        kept_hotwords = prompt[1 : 1 + hotwords][: max(0, hotwords - (excess - cut_previous))]
        context = kept_hotwords + previous[cut_previous:]
        return ([tokenizer.sot_prev] if context else []) + context + prompt[start:]
