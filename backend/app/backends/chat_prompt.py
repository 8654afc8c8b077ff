"""Chat messages as every engine can take them: content that stays content, roles a template accepts.

**Special tokens in content.** A chat template joins the messages with the model's control tokens
(`<|im_start|>user ... <|im_end|>` for ChatML), and engines then tokenise the whole prompt with
special-token parsing on. Text a user sends that spells a control token (`<|im_end|>`, `<|im_start|>
system`) would become that token: the user closes their own turn and writes a system or assistant
turn of their own. So each engine knows the control tokens of its model (`markers`: read from the
GGUF's vocabulary, or the transformers tokenizer's special tokens; a remote server's are unknown, so
the markers of the common templates), and `defuse` breaks every occurrence of one in a message's
content with an invisible WORD JOINER after its first character. The text then reaches the model as
the ordinary tokens of its characters, whatever the engine's tokenizer does with the rest of the
prompt. Only the prompt is changed: what is stored and shown is what the user sent.

**Roles.** Templates and engines refuse, or misread, some sequences a conversation can hold: two
assistant turns in a row (a client asked for two responses), two user turns (typed items), a
trailing assistant turn (llama.cpp continues it instead of answering). `engine_messages` merges
consecutive messages of one role into one, and every system message into the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from backend.app.core.values import ChatMessage, ToolSpec

JOINER = "\u2060"
"""U+2060 WORD JOINER: invisible, and no tokenizer makes a control token of text that holds it."""

COMMON_MARKERS = re.compile(
    r"<\|[^\s<>|]{1,48}\|>"  # ChatML, Llama 3, Phi, Qwen, DeepSeek's ASCII ones: <|im_end|>, <|eot_id|>
    r"|<｜[^<>｜]{1,48}｜>"  # DeepSeek's full-width ones: <｜end▁of▁sentence｜>
    r"|</?s>|<unk>|<pad>|<mask>"  # SentencePiece models' BOS/EOS (Llama 2, Mistral)
    r"|\[/?(?:INST|SYS|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|TOOL_CONTENT)\]"  # Mistral
    r"|<</?SYS>>"  # Llama 2
    r"|<(?:start|end)_of_(?:turn|image)>"  # Gemma
    r"|<\|?(?:begin|end)_of_(?:text|sentence)\|?>"
    r"|<tool_call>|</tool_call>|<tool_response>|</tool_response>|<think>|</think>",
    re.IGNORECASE,
)
"""Control tokens of the common chat templates, for an engine whose vocabulary we cannot read (a
remote OpenAI-compatible server: vLLM, Ollama and llama.cpp's server parse them in content)."""


class Markers:
    """The control tokens of one model: exact strings (from its vocabulary) and/or a pattern."""

    def __init__(self, tokens: Iterable[str] = (), pattern: re.Pattern[str] | None = None) -> None:
        # Longest first, so that a token that contains another is broken as itself. A token of one
        # character cannot be broken by a joiner after its first character: such vocabularies
        # (byte-level "special" tokens) are not chat markers, and are left alone.
        exact = sorted({t for t in tokens if len(t) > 1 and not t.isspace()}, key=len, reverse=True)
        parts = [re.escape(t) for t in exact]
        if pattern is not None:
            parts.append(pattern.pattern)
        flags = pattern.flags if pattern is not None else 0
        self.pattern = re.compile("|".join(parts), flags) if parts else None
        self.count = len(exact)

    def find(self, text: str) -> list[str]:
        """The control tokens `text` spells, in order."""
        return [] if self.pattern is None else self.pattern.findall(text)

    def defuse(self, text: str) -> str:
        """`text` with a WORD JOINER after the first character of every control token it spells."""
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda m: m.group(0)[0] + JOINER + m.group(0)[1:], text)


def engine_messages(messages: Sequence[ChatMessage], markers: Markers) -> list[dict[str, Any]]:
    """`messages` as an engine's template takes them: content defused, one system message first
    (every system message merged into it), consecutive messages of one role merged into one. An
    assistant message with tool calls and a tool result keep their own message (OpenAI's shape:
    `tool_calls`, `tool_call_id`), the calls' arguments defused as content is."""
    merged: list[dict[str, Any]] = []
    system: list[str] = []
    for message in messages:
        content = markers.defuse(message.content)
        if message.role == "system":
            system.append(content)
        elif message.tool_calls:
            calls = [
                {
                    "id": markers.defuse(c.id),
                    "type": "function",
                    "function": {"name": markers.defuse(c.name), "arguments": markers.defuse(c.arguments)},
                }
                for c in message.tool_calls
            ]
            merged.append({"role": "assistant", "content": content, "tool_calls": calls})
        elif message.role == "tool":
            call_id = markers.defuse(message.tool_call_id or "")
            merged.append({"role": "tool", "tool_call_id": call_id, "content": content})
        elif merged and merged[-1]["role"] == message.role and "tool_calls" not in merged[-1]:
            merged[-1]["content"] += "\n\n" + content
        else:
            merged.append({"role": message.role, "content": content})
    if system:
        merged.insert(0, {"role": "system", "content": "\n\n".join(system)})
    return merged


GGUF_CONTROL = 3
GGUF_USER_DEFINED = 4
"""llama.cpp's token types whose text its tokenizer turns into the token when parsing specials."""


def gguf_markers(path: Path) -> Markers:
    """The control and user-defined tokens of a GGUF model's vocabulary (read from its metadata,
    memory-mapped: the weights are not read)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    types = reader.fields.get("tokenizer.ggml.token_type")
    if tokens is None or types is None:
        return Markers(pattern=COMMON_MARKERS)
    found = []
    for index, type_index in zip(tokens.data, types.data, strict=True):
        kind = int(types.parts[type_index][0])
        if kind in (GGUF_CONTROL, GGUF_USER_DEFINED):
            found.append(bytes(tokens.parts[index]).decode("utf-8", "replace"))
    return Markers(found)


def engine_tools(tools: Sequence[ToolSpec], markers: Markers) -> list[dict[str, Any]]:
    """The tools as a template describes them, their descriptions and schemas defused as content
    is: an MCP server's description (or a client's) is text a template writes into the prompt."""
    described = []
    for tool in tools:
        text = json.dumps(tool.openai())
        try:
            described.append(json.loads(markers.defuse(text)))
        except ValueError:  # a vocabulary whose control token spells JSON syntax: left as it is
            described.append(json.loads(text))
    return described
