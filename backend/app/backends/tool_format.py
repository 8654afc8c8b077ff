"""Tool calls read out of a model's text, for engines whose server does not read them itself.

Chat templates tell a model how to write a call, and the common families write it one of a few
ways:
- Hermes (Qwen 2.5/3, Hermes, many fine-tunes): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
  one block per call;
- Qwen2.5-Coder, and small models generally, often put the same object in a ```json code block;
- Llama 3.x: the bare object, with `parameters` for `arguments`, maybe after `<|python_tag|>`;
- Mistral: `[TOOL_CALLS]` and a JSON list of such objects.

`ToolTextScanner` streams a reply's text and holds back what may be a call (from its opening
marker to the end), so a client never hears half of a call read out as an answer; at the end
`parse_calls` reads the held text. A block that is not a call to an offered function (a code
sample in an answer) is given back as text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

OPENERS = ("<tool_call>", "<tools>", "<function_call>", "```", "[TOOL_CALLS]", "<|python_tag|>")
"""Where a call may begin anywhere in a reply; a reply that begins with `{` or `[` may be one too."""
_TAGGED = re.compile(r"<(tool_call|tools|function_call)>\s*(.*?)\s*(?:</\1>|$)", re.DOTALL)
"""Hermes' tag, and the two a small model writes in its place now and then (measured: Qwen2.5-Coder
wrote `<tools>` when the system prompt spoke of functions)."""
_FENCE = re.compile(r"```[A-Za-z]*\s*(.*?)\s*(?:```|$)", re.DOTALL)


@dataclass(frozen=True)
class ParsedCall:
    """A call as the model wrote it: a name, and arguments (an object, or text that should be one)."""

    name: str
    arguments: Any


class ToolTextScanner:
    """Text deltas in, the text that is surely an answer out; from a call's opening marker on, the
    rest is held for `parse_calls`."""

    def __init__(self) -> None:
        self._pending = ""
        self._held: list[str] | None = None
        self._started = False

    @property
    def holding(self) -> bool:
        return self._held is not None

    def feed(self, delta: str) -> str:
        if self._held is not None:
            self._held.append(delta)
            return ""
        text = self._pending + delta
        if not self._started:
            stripped = text.lstrip()
            if not stripped:
                self._pending = text
                return ""
            self._started = True
            if stripped[0] in "{[":
                self._held = [text]
                self._pending = ""
                return ""
        at = min((i for i in (text.find(o) for o in OPENERS) if i >= 0), default=-1)
        if at >= 0:
            self._held, self._pending = [text[at:]], ""
            return text[:at]
        keep = _partial_opener(text)
        self._pending = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def held(self) -> str:
        """What was held back (a call, or text that looked like one), with any pending tail."""
        return "".join(self._held) if self._held is not None else self._pending


def _partial_opener(text: str) -> int:
    """The length of the longest tail of `text` that begins an opener."""
    best = 0
    for opener in OPENERS:
        for size in range(min(len(opener) - 1, len(text)), 0, -1):
            if opener.startswith(text[-size:]):
                best = max(best, size)
                break
    return best


def parse_calls(text: str, names: set[str] | frozenset[str]) -> tuple[list[ParsedCall], bool]:
    """The calls `text` holds, in any of the formats above, and whether it was a call attempt at
    all: a call marker, or an object naming one of `names`, even one too broken to parse. An
    attempt that parses to no usable call is what an engine retries under a grammar; anything
    else (a JSON answer, a code sample, `{"name": "Bob"}`) is text. Only calls to `names` count."""
    stripped = text.strip()
    if not stripped:
        return [], False
    objects: list[Any] = []
    attempt = False
    if _TAGGED.search(stripped):
        attempt = True
        for _, body in _TAGGED.findall(stripped):
            objects.extend(_objects(body))
    elif stripped.startswith("[TOOL_CALLS]"):
        attempt = True
        objects.extend(_objects(stripped[len("[TOOL_CALLS]") :]))
    elif stripped.startswith("<|python_tag|>"):
        attempt = True
        objects.extend(_objects(stripped[len("<|python_tag|>") :]))
    elif "```" in stripped:
        for body in _FENCE.findall(stripped):
            objects.extend(_objects(body))
    else:
        objects.extend(_objects(stripped))
    calls = []
    for item in objects:
        name = _named(item)
        if name is not None and name in names:
            attempt = True
            calls.append(ParsedCall(name, item.get("arguments", item.get("parameters", {}))))
    if not attempt and stripped[0] in "{[`":  # too broken to parse, but naming an offered function
        attempt = any(re.search(rf'"name"\s*:\s*"{re.escape(n)}"', stripped) for n in names)
    return calls, attempt


def _named(item: Any) -> str | None:
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return str(item["name"])
    if isinstance(item, dict) and isinstance(item.get("function"), dict):  # OpenAI's own shape
        function = item["function"]
        if isinstance(function.get("name"), str):
            item.setdefault("arguments", function.get("arguments", {}))
            return str(function["name"])
    return None


def _objects(text: str) -> list[Any]:
    """The JSON objects `text` holds: one object, a list of them, or several one after another."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    index, text = 0, text.strip()
    while index < len(text):
        while index < len(text) and text[index] in " \t\r\n,;":
            index += 1
        if index >= len(text):
            break
        try:
            value, index = decoder.raw_decode(text, index)
        except ValueError:
            break
        found.extend(value if isinstance(value, list) else [value])
    return found
