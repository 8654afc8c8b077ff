"""Transcript optimisation on the real embedded LLM, in English and Chinese."""

from __future__ import annotations

import asyncio

import pytest

from backend.app.container import Services
from backend.app.core.errors import InvalidInputError, TextTooLongError
from backend.app.services.optimize import Optimized, OptimizeMode, TranscriptOptimizer, word_sequence

ENGLISH = "um so i think we should uh we should meet on friday at the office"
CHINESE = "嗯那个我觉得我们应该周五在办公室见面吧然后一起讨论一下这个项目"


def run(services: Services, text: str, mode: OptimizeMode, prompt: str | None = None) -> Optimized:
    return asyncio.run(TranscriptOptimizer(services.chat).optimize(text, mode, prompt))


def test_word_sequence_ignores_punctuation_case_and_spacing() -> None:
    assert word_sequence("Hello, world!") == word_sequence("hello world")
    assert word_sequence("你好，世界。") == word_sequence("你好世界")
    assert word_sequence("hello world") != word_sequence("hello there world")


@pytest.mark.parametrize("text", [ENGLISH, CHINESE])
def test_punctuate_never_changes_the_words(services: Services, text: str) -> None:
    result = run(services, text, "punctuate")
    assert word_sequence(result.text) == word_sequence(text)
    if result.warnings:  # the model strayed: the original came back, and the caller is told
        assert result.text == text


@pytest.mark.parametrize("mode", ["optimize", "format"])
@pytest.mark.parametrize("text", [ENGLISH, CHINESE])
def test_rewriting_modes_return_text(services: Services, text: str, mode: OptimizeMode) -> None:
    result = run(services, text, mode)
    assert result.text.strip()


def test_custom_mode_applies_the_instruction(services: Services) -> None:
    result = run(services, "the meeting is on friday", "custom", "Rewrite the text in capital letters.")
    assert result.text.strip()
    with pytest.raises(InvalidInputError, match="custom_prompt"):
        run(services, "text", "custom")
    with pytest.raises(InvalidInputError):
        run(services, "text", "custom", "x" * 2001)


def test_empty_text_needs_no_model(services: Services) -> None:
    assert run(services, "   ", "optimize") == Optimized("")


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("a" + "\u0301" * 3000, None),  # 3,001 characters, about 6,000 tokens
        ("e\u0336\u0337" * 1000, None),  # "zalgo" text
        ("hello " * 10, "\u0489" * 1999),  # a custom instruction of combining marks
    ],
)
def test_text_is_bounded_by_its_tokens_before_the_model_runs(
    services: Services, text: str, prompt: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(text) <= services.chat.max_chars
    backend = services.chat.backend
    calls: list[object] = []
    real_chat = backend.chat
    monkeypatch.setattr(backend, "chat", lambda *a, **k: calls.append(a) or real_chat(*a, **k))
    with pytest.raises(TextTooLongError, match="LLM_CONTEXT_TOKENS"):
        run(services, text, "custom" if prompt else "optimize", prompt)
    assert calls == [] and services.chat.worker.pending == 0
    run(services, "um hello there", "optimize")  # an ordinary text still reaches the model
    assert len(calls) == 1
