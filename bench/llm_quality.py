"""The embedded LLM candidates side by side on fixed Chinese and English prompts: their answers,
for a person to judge, and their speed on llama.cpp (the server's CPU engine) in the same run.

Each prompt is asked as a spoken turn is: the default system prompt (with the server's "The user
speaks Chinese: answer in Chinese." for the Chinese ones), one user turn, greedy, at most 96
tokens. Per model: each answer, whether it is in the prompt's language (by its script), time to
the first token and decode tokens/s. Models missing from MODELS_DIR are left out, saying how to
prepare them (scripts/prepare_zh_llm.sh).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

from backend.app.core.config import Settings
from backend.app.core.values import ChatMessage, GenerationOptions
from backend.app.text.chinese import script_language
from bench import machine
from bench.common import median, table

PROMPTS = (
    ("zh", "你好！请用两句话介绍一下你自己。"),
    ("zh", "北京是哪个国家的首都？"),
    ("zh", "我晚上睡不着，有什么好办法吗？"),
    ("zh", "请推荐一道简单的家常菜，并说明怎么做。"),
    ("zh", "一年有几个月？哪个月最短？"),
    ("en", "What is the capital of France?"),
    ("en", "I can't fall asleep at night. Any tips?"),
    ("en", "How many legs does a spider have?"),
)
OPTIONS = GenerationOptions(max_tokens=96, temperature=0.0)
QWEN_05B = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def candidates(settings: Settings) -> dict[str, str]:
    """Model label -> LLM_MODEL value ("" is the embedded SmolLM2); only those on disk."""
    found = {"SmolLM2-135M-Instruct Q4_1 (embedded)": ""}
    qwen = settings.storage.models_dir / QWEN_05B
    if qwen.is_file():
        found["Qwen2.5-Coder-0.5B-Instruct Q4_K_M"] = str(qwen)
    else:
        print(f"llm quality: {qwen} missing (scripts/prepare_zh_llm.sh); left out", flush=True)
    return found


def messages_for(system: str, language: str, prompt: str) -> list[ChatMessage]:
    if language == "zh":
        system = f"{system}\n\nThe user speaks Chinese: answer in Chinese."
    return [ChatMessage("system", system), ChatMessage("user", prompt)]


def measure(settings: Settings) -> dict[str, Any]:
    from backend.app.backends.llamacpp_llm import LlamaCppChatBackend

    models: dict[str, list[dict[str, Any]]] = {}
    for label, path in candidates(settings).items():
        engine = LlamaCppChatBackend(path, settings.llm.context_tokens)
        engine.chat([ChatMessage("user", "Hi")], GenerationOptions(2, 0.0))  # warm-up
        rows = []
        for language, prompt in PROMPTS:
            started = time.perf_counter()
            first = 0.0
            answer = ""
            for delta in engine.chat_stream(
                messages_for(settings.llm.system_prompt, language, prompt), OPTIONS
            ):
                first = first or time.perf_counter()
                answer += delta
            ended = time.perf_counter()
            tokens = engine.count_text_tokens(answer)
            rows.append(
                {
                    "language": language,
                    "prompt": prompt,
                    "answer": answer.strip(),
                    "in_language": (script_language(answer) == "zh") == (language == "zh"),
                    "first_token_s": first - started,
                    "decode_tps": (tokens - 1) / (ended - first) if tokens > 1 and ended > first else 0.0,
                }
            )
            print(f"llm quality {label}: {rows[-1]}", flush=True)
        models[label] = rows
        del engine
        gc.collect()
    return models


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def section(models: dict[str, list[dict[str, Any]]], out: Path) -> list[str]:
    del out
    labels = list(models)
    lines = [
        "## LLM quality: Chinese and English answers side by side",
        "",
        "The embedded LLM candidates on llama.cpp, each prompt asked as a spoken turn (the default "
        "system prompt, which for a Chinese turn asks for the answer in Chinese; greedy; at most "
        f"{OPTIONS.max_tokens} tokens). *In language*: the answer is written in the prompt's language.",
        "",
    ]
    summary = []
    for label in labels:
        rows = models[label]
        for language in ("zh", "en"):
            mine = [r for r in rows if r["language"] == language]
            summary.append(
                (
                    label,
                    language,
                    f"{sum(r['in_language'] for r in mine)}/{len(mine)}",
                    f"{median([r['first_token_s'] for r in mine]):.2f}",
                    f"{median([r['decode_tps'] for r in mine]):.1f}",
                )
            )
    lines += table(("model", "prompts", "in language", "first token s (median)", "decode tok/s"), summary)
    lines += ["", "### The answers", ""]
    header = ("prompt", *labels)
    answers = []
    for i, (_, prompt) in enumerate(PROMPTS):
        answers.append((_cell(prompt), *(_cell(models[label][i]["answer"]) for label in labels)))
    lines += table(header, answers)
    lines += ["", f"*Machine: {machine.summary()}.*", ""]
    return lines
