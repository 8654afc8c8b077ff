"""A reply that may call server-side tools: generate, run the calls, generate again, bounded.

Runs on the LLM's worker thread as one piece of work (the turn's LLM slot is held throughout, so a
turn admitted is never refused half-way): each round streams the answer's text as it comes; calls
are run through `call` (McpTools.call_blocking: on the event loop, bounded by TOOL_TIMEOUT_S), their
results appended to the conversation as OpenAI's `tool` messages, and the model asked again. After
TOOL_MAX_STEPS rounds of calls the model must answer (the tools are withdrawn). A round whose
every call failed ends the reply with "I couldn't reach <server>." said aloud, rather than asking a
small model to explain an error. A round that only repeats calls already answered in the
conversation (small models ask again for what they were just told) is generated once more with the
tools withdrawn, so that it answers. A call of one of the client's own tools (OpenAI Realtime's
function tools) ends the reply: the client runs it, and asks for the next response with its result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from backend.app.backends.protocols import ToolCallingChat
from backend.app.core.cancellation import WorkCancelled, cancel_event
from backend.app.core.tools import ToolRequest
from backend.app.core.values import CallPending, ChatMessage, GenerationOptions, ToolCall
from backend.app.services.mcp_tools import ToolStep


def reply_with_tools(
    engine: ToolCallingChat,
    messages: Sequence[ChatMessage],
    options: GenerationOptions,
    tools: ToolRequest,
    call: Callable[[ToolCall], ToolStep],
    max_steps: int,
    acknowledgement: str = "",
    client: frozenset[str] = frozenset(),
) -> Iterator[str | ToolStep | ToolCall]:
    """The reply's text deltas, and each `ToolStep` once its call has run. Calls of the `client`'s
    own tools (by name) are not run here: the reply ends with them (`ToolCall`s), after the round's
    server-side calls."""
    conversation = list(messages)
    # Calls already answered since the user last spoke (a repeated action in a later turn is new).
    since = max((i for i, m in enumerate(conversation) if m.role == "user"), default=-1)
    answered = {_key(c) for m in conversation[since + 1 :] for c in m.tool_calls}
    said = False
    withdrawn = False
    for step in range(max_steps + 1):
        last = step == max_steps or withdrawn
        offered = ToolRequest(tools.tools, "none", tools.parallel) if last else tools
        calls: list[ToolCall] = []
        pending = dropped = False
        for item in engine.chat_tools_stream(conversation, options, offered):
            if isinstance(item, CallPending):
                pending = True
                if acknowledgement and not said:  # a call begins: said at once, not after it
                    said = True
                    yield acknowledgement + " "
            elif isinstance(item, ToolCall):
                calls.append(item)
            elif pending and _markup(item):
                dropped = True  # a call written wrong, given back as text: never read aloud
            elif item:
                said = said or bool(item.strip())
                yield item
        if not calls:
            if dropped and acknowledgement:
                yield " Sorry, I couldn't do that."
            return
        if all(_key(c) in answered for c in calls):
            withdrawn = True  # it asks again for what it was just told: it must answer now
            continue
        theirs = [c for c in calls if c.name in client]
        calls = [c for c in calls if c.name not in client]
        answered.update(_key(c) for c in calls)
        if calls and acknowledgement and not said:
            said = True
            yield acknowledgement + " "
        steps = [call(c) for c in calls]
        yield from steps
        if theirs:
            yield from theirs
            return
        if all(s.error for s in steps):
            servers = sorted({s.server or s.call.name for s in steps})
            yield f" I couldn't reach {' or '.join(servers)}."
            return
        conversation.append(ChatMessage("assistant", "", tool_calls=tuple(calls)))
        conversation += [ChatMessage("tool", s.result, tool_call_id=s.call.id) for s in steps]


def _markup(text: str) -> bool:
    """Text that is a tool call's markup rather than words (a call the engine could not read)."""
    stripped = text.strip()
    return stripped[:1] in ("{", "[", "`", "<") or "<tool_call>" in stripped


def _key(call: ToolCall) -> tuple[str, str]:
    """A call by what it asks (its function and arguments, however they are spaced or ordered)."""
    try:
        arguments = json.dumps(json.loads(call.arguments or "{}"), sort_keys=True)
    except ValueError:
        arguments = call.arguments
    return call.name, arguments


class Confirmation(Protocol):
    """What a pre-emptive reply waits on before a tool acts (turn_events.Commitment)."""

    @property
    def confirmed(self) -> bool: ...


def held(run: Callable[[ToolCall], ToolStep], hold: Confirmation | None) -> Callable[[ToolCall], ToolStep]:
    """`run`, made to wait (on the LLM's worker thread) until `hold` is confirmed; the reply's
    cancellation (the user went on speaking) ends the wait and the reply."""
    if hold is None:
        return run

    def after_confirmation(call: ToolCall) -> ToolStep:
        cancelled = cancel_event()
        while not hold.confirmed:
            if cancelled is not None and cancelled.is_set():
                raise WorkCancelled
            time.sleep(0.02)
        return run(call)

    return after_confirmation


def unserved(call: ToolCall) -> ToolStep:
    """A call of a tool no server has (never offered: the client's own are not run here)."""
    return ToolStep(call, f"the tool {call.name} is not available", "", True)
