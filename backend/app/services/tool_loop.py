"""A reply that may call server-side tools: generate, run the calls, generate again, bounded.

Runs on the LLM's worker thread as one piece of work (the turn's LLM slot is held throughout, so a
turn admitted is never refused half-way): each round streams the answer's text as it comes; calls
are run through `call` (McpTools.call_blocking: on the event loop, bounded by TOOL_TIMEOUT_S), their
results appended to the conversation as OpenAI's `tool` messages, and the model asked again. After
TOOL_MAX_STEPS rounds of calls the model must answer (the tools are withdrawn). A round whose
every call failed ends the reply with "I couldn't reach <server>." said aloud, rather than asking a
small model to explain an error. A call of one of the client's own tools (OpenAI Realtime's
function tools) ends the reply: the client runs it, and asks for the next response with its result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from backend.app.backends.protocols import ToolCallingChat
from backend.app.core.tools import ToolRequest
from backend.app.core.values import ChatMessage, GenerationOptions, ToolCall
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
    said = False
    for step in range(max_steps + 1):
        offered = tools if step < max_steps else ToolRequest(tools.tools, "none", tools.parallel)
        calls: list[ToolCall] = []
        for item in engine.chat_tools_stream(conversation, options, offered):
            if isinstance(item, ToolCall):
                calls.append(item)
            elif item:
                said = said or bool(item.strip())
                yield item
        if not calls:
            return
        theirs = [c for c in calls if c.name in client]
        calls = [c for c in calls if c.name not in client]
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
