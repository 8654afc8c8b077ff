"""Tool calls on the llama.cpp engine: the model's own chat template, our reading of its calls.

llama.cpp's server reads tool calls out of a reply for the template families it knows, but on the
embedded Qwen2.5-Coder it does neither part (measured: `tool_choice: "required"` did not constrain
the reply, and the calls the model wrote, in a ```json block, came back as content). So the engine
does it in two steps it controls:

1. The prompt is the model's chat template rendered by llama.cpp with the tools (`/apply-template`:
   the template describes them and the call format, as the model was trained on it).
2. The reply is read with `tool_format` as it streams: answer text goes out at once; a call is held,
   parsed and checked against its function's schema. A call that is malformed (not JSON, an
   unknown function, arguments the schema refuses) is generated once more under a grammar made from
   the schemas (llama.cpp's `json_schema`); if even that fails the check, the held text is given
   back as text. `required` and a named function are generated under that grammar from the start.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from backend.app.backends.tool_format import ParsedCall, ToolTextScanner, parse_calls
from backend.app.core.tools import ToolRequest, call_schema, check_arguments, new_call
from backend.app.core.values import CallPending, ChatMessage, GenerationOptions, ToolCall, ToolSpec


class Engine(Protocol):
    """What this module needs of the llama.cpp engine (llamacpp_llm.py)."""

    def render(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()) -> str: ...

    def complete(
        self,
        prompt: str,
        options: GenerationOptions,
        on_text: Callable[[str], bool],
        schema: dict[str, Any] | None = None,
    ) -> bool: ...


Push = Callable[[str | ToolCall | CallPending], bool]
"""Takes a piece of answer text, the sign that a call begins, or a finished call; answers True to
stop the generation."""


def run_with_tools(
    engine: Engine,
    messages: Sequence[ChatMessage],
    options: GenerationOptions,
    request: ToolRequest,
    push: Push,
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """One reply that may call the offered tools: answer text and calls go to `push` in order;
    `stopped` is asked at every token (a call being written is not pushed, but is stopped too)."""
    prompt = engine.render(messages, request.offered)
    opener = "<tool_call>\n" if "<tool_call>" in prompt else ""  # the template's own call marker
    names = {t.name for t in request.offered}
    if request.forced:
        push(CallPending())
        calls = _constrained(engine, prompt + opener, options, request, None, push, stopped=stopped)
        _give(calls, request, push)
        return
    scanner = ToolTextScanner() if names else None
    said: list[str] = []

    def on_text(text: str) -> bool:
        if stopped():
            return True
        holding = scanner is not None and scanner.holding
        out = scanner.feed(text) if scanner is not None else text
        if out:
            said.append(out)
            if push(out):
                return True
        if scanner is not None and scanner.holding and not holding:
            return push(CallPending())
        return False

    if engine.complete(prompt, options, on_text) or scanner is None:
        return
    held = scanner.held()
    parsed, attempt = parse_calls(held, names)
    usable = [c for c in parsed if _problem(request, c) is None]
    if parsed and len(usable) == len(parsed):
        _give([new_call(c.name, c.arguments) for c in usable], request, push)
        return
    if attempt:  # a call the model meant but wrote wrong: once more, under the schemas' grammar
        named = {c.name for c in parsed}
        calls = _constrained(
            engine, prompt + "".join(said) + opener, options, request, named or None, push, False, stopped
        )
        if calls:
            _give(calls, request, push)
            return
    if held.strip():
        push(held)


def _problem(request: ToolRequest, call: ParsedCall) -> str | None:
    spec = request.spec(call.name)
    return "no such function" if spec is None else check_arguments(spec, call.arguments)


def _give(calls: list[ToolCall], request: ToolRequest, push: Push) -> None:
    for call in calls if request.parallel else calls[:1]:
        if push(call):
            return


def _constrained(
    engine: Engine,
    prompt: str,
    options: GenerationOptions,
    request: ToolRequest,
    names: set[str] | None,
    push: Push,
    give_back: bool = True,
    stopped: Callable[[], bool] = lambda: False,
) -> list[ToolCall]:
    """One call generated under the grammar of the offered functions' schemas (only `names`, when
    the model already chose among them); [] if the result still fails the check (a schema feature
    the grammar cannot express), after giving its text back as text when `give_back` (a retry
    gives back the model's first text instead)."""
    specs = [t for t in request.offered if names is None or t.name in names] or list(request.offered)
    pieces: list[str] = []

    def collect(text: str) -> bool:
        pieces.append(text)
        return stopped()

    if engine.complete(prompt, options, collect, call_schema(specs)):
        return []
    text = "".join(pieces)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        call = ParsedCall(value["name"], value.get("arguments", {}))
        if _problem(request, call) is None:
            return [new_call(call.name, call.arguments)]
    if give_back and text.strip():
        push(text)
    return []
