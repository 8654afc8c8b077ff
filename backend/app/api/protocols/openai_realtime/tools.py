"""OpenAI Realtime's tools: a session's (or one response's) `tools` and `tool_choice`, checked, and
the function calls a response ends with, as OpenAI's items and events.

A `function` tool is the client's own: the model's call ends the response with a `function_call`
item (`response.output_item.added`, `response.function_call_arguments.delta` / `.done`,
`response.output_item.done`), the client runs it and adds a `function_call_output` item, then asks
for the next response. An `mcp` tool names one of the MCP servers the operator configured
(MCP_SERVERS): those tools are the server's own, run in the turn (docs/tools.md); a client cannot
make this server connect to a server it names. `allowed_tools` and `require_approval` are not
honoured: every tool of the operator's servers is offered, and runs without asking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backend.app.core.errors import InvalidInputError
from backend.app.core.tools import ToolRequest, check_tool, check_tools
from backend.app.core.values import ToolCall, ToolSpec
from backend.app.services.realtime.config import SessionError


def session_tools(
    tools: list[dict[str, Any]] | None,
    choice: str | dict[str, Any] | None,
    where: str,
    mcp: Mapping[str, str | None],
) -> ToolRequest | None:
    """The client's function tools and how the model may use them (None: none); a malformed one is
    a SessionError naming its field (`session.tools[1].parameters`)."""
    specs: list[ToolSpec] = []
    for index, tool in enumerate(tools or []):
        field = f"{where}.tools[{index}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "mcp":
            _check_mcp(tool, field, mcp)
            continue
        if kind != "function":
            raise SessionError(
                f"Invalid value for '{field}.type': {kind!r}; the tools here are 'function' and 'mcp'.",
                "invalid_value",
                f"{field}.type",
            )
        try:
            specs.append(
                check_tool(
                    index, tool.get("name"), tool.get("description"), tool.get("parameters"), f"{where}.tools"
                )
            )
        except InvalidInputError as e:
            raise SessionError(e.message, "invalid_value", e.param) from None
    mode = _choice(choice, where)
    try:
        check_tools(specs, mode, f"{where}.tools")
    except InvalidInputError as e:
        raise SessionError(
            e.message, "invalid_value", f"{where}.{e.param}" if e.param == "tool_choice" else e.param
        ) from None
    return ToolRequest(tuple(specs), mode) if specs else None


def _choice(choice: str | dict[str, Any] | None, where: str) -> str:
    if choice is None or choice in ("auto", "none", "required"):
        return str(choice or "auto")
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return str(choice["name"])
    if isinstance(choice, dict) and choice.get("type") == "mcp":
        return "auto"
    raise SessionError(
        f"Invalid value for '{where}.tool_choice': 'auto', 'none', 'required', or "
        '{"type": "function", "name": ...}.',
        "invalid_value",
        f"{where}.tool_choice",
    )


def _check_mcp(tool: dict[str, Any], field: str, mcp: Mapping[str, str | None]) -> None:
    """An `mcp` tool names one of the operator's servers, by its label (and its URL, if given)."""
    label, url = tool.get("server_label"), tool.get("server_url")
    if isinstance(label, str) and label in mcp and url is not None and url != mcp[label]:
        raise SessionError(
            f"Invalid value for '{field}.server_url': this server connects to its MCP server "
            f"{label!r} at the address its operator configured, not at one a client names.",
            "invalid_value",
            f"{field}.server_url",
        )
    if not isinstance(label, str) or label not in mcp:
        known = ", ".join(sorted(mcp)) or "none are configured"
        raise SessionError(
            f"Invalid value for '{field}.server_label': {str(label)[:64]!r} is not one of this server's MCP "
            f"servers ({known}); it connects only to those its operator configured (MCP_SERVERS).",
            "invalid_value",
            f"{field}.server_label",
        )


def call_item(call: ToolCall, item_id: str, status: str) -> dict[str, Any]:
    """A `function_call` conversation item, in OpenAI's shape."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "name": call.name,
        "call_id": call.id,
        "arguments": call.arguments if status == "completed" else "",
    }


def output_item(item_id: str, call_id: str, output: str) -> dict[str, Any]:
    """A `function_call_output` conversation item, in OpenAI's shape."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call_output",
        "status": "completed",
        "call_id": call_id,
        "output": output,
    }
