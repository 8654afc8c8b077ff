"""Tools a request offers the model, and the checks every tool and every call passes.

A request offers functions (`ToolSpec`: OpenAI's `{"type": "function", "function": {...}}`) and
says how the model may use them (`ToolRequest.choice`, OpenAI's `tool_choice`): `auto` (call or
answer), `none` (answer only), `required` (call one of them), or one function by name. A schema
that is not a JSON Schema object is the client's error (400, naming the field). A call the model
makes is kept only if its arguments are a JSON object that the function's schema accepts
(`check_arguments`); the engines then retry it under a grammar, or give the model's text back as
text (docs/tools.md).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backend.app.core.errors import InvalidInputError
from backend.app.core.values import ToolCall, ToolSpec

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""OpenAI's rule for a function's name."""
MAX_TOOLS = 128
"""OpenAI's limit on the tools of one request."""
MAX_SCHEMA_CHARS = 64_000
"""One function's schema, as JSON: a bound on what reaches the prompt and the grammar."""


@dataclass(frozen=True)
class ToolRequest:
    """The tools of one request and how the model may use them."""

    tools: tuple[ToolSpec, ...]
    choice: str = "auto"
    """`auto`, `none`, `required`, or the name of the one function the model must call."""
    parallel: bool = True
    """Whether one reply may hold several calls (OpenAI's `parallel_tool_calls`)."""

    @property
    def offered(self) -> tuple[ToolSpec, ...]:
        """The tools shown to the model: none under `none`, the named one when one is named."""
        if self.choice == "none":
            return ()
        if self.choice in ("auto", "required"):
            return self.tools
        return tuple(t for t in self.tools if t.name == self.choice)

    @property
    def forced(self) -> bool:
        """The model must call a tool (`required` or a named function)."""
        return self.choice not in ("auto", "none")

    def spec(self, name: str) -> ToolSpec | None:
        return next((t for t in self.offered if t.name == name), None)


def check_tool(index: int, name: object, description: object, parameters: object, where: str) -> ToolSpec:
    """A function tool as a client sent it (`where` names its field), checked: a name OpenAI
    allows, a description that is text, parameters that are a JSON Schema of an object."""
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInputError(
            f"{where}[{index}].name must be 1-64 letters, digits, '_' or '-' (got {str(name)[:80]!r})",
            param=f"{where}[{index}].name",
        )
    if description is not None and not isinstance(description, str):
        raise InvalidInputError(
            f"{where}[{index}].description must be a string", param=f"{where}[{index}].description"
        )
    schema = {"type": "object", "properties": {}} if parameters is None else parameters
    field = f"{where}[{index}].parameters"
    if not isinstance(schema, Mapping):
        raise InvalidInputError(f"{field} must be a JSON Schema object", param=field)
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidInputError(f"{field} is not JSON: {str(e)[:200]}", param=field) from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise InvalidInputError(f"{field} is longer than {MAX_SCHEMA_CHARS} characters", param=field)
    if schema.get("type", "object") != "object":
        raise InvalidInputError(f'{field} must describe an object ("type": "object")', param=field)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        path = "/".join(str(p) for p in e.path) or "(root)"
        raise InvalidInputError(
            f"{field} is not a valid JSON Schema at {path}: {e.message}", param=field
        ) from None
    except Exception as e:  # a schema too deep to walk
        raise InvalidInputError(f"{field} cannot be used: {type(e).__name__}", param=field) from None
    for ref in _refs(schema):
        if not ref.startswith("#") or _pointer(schema, ref[1:]) is None:
            raise InvalidInputError(
                f"{field}: the $ref {ref[:100]!r} does not point inside the schema (only local "
                "references such as #/$defs/Name are followed)",
                param=field,
            )
    return ToolSpec(name, description or "", dict(schema))


def _refs(value: object) -> list[str]:
    """Every `$ref` in a schema."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            ref = item.get("$ref")
            if isinstance(ref, str):
                found.append(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _pointer(schema: object, pointer: str) -> object | None:
    """The part of `schema` a JSON pointer (`/$defs/Name`) names, or None."""
    item = schema
    for part in (p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]):
        if isinstance(item, Mapping) and part in item:
            item = item[part]
        elif isinstance(item, list) and part.isdigit() and int(part) < len(item):
            item = item[int(part)]
        else:
            return None
    return item


def check_tools(tools: Sequence[ToolSpec], choice: str, where: str = "tools") -> None:
    """The request's tools as a whole: distinct names, at most MAX_TOOLS, a named choice among them."""
    if len(tools) > MAX_TOOLS:
        raise InvalidInputError(f"{where} takes at most {MAX_TOOLS} functions", param=where)
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInputError(f"{where}: a function name is given twice ({', '.join(twice)})", param=where)
    if choice in ("auto", "none"):
        return
    if not tools:
        raise InvalidInputError(f"tool_choice {choice!r} needs {where}", param="tool_choice")
    if choice != "required" and choice not in names:
        raise InvalidInputError(f"tool_choice names {choice!r}, which is not in {where}", param="tool_choice")


def check_arguments(spec: ToolSpec, arguments: str | Mapping[str, Any]) -> str | None:
    """Why the model's arguments for `spec` cannot be used (None: they can): not JSON, not an
    object, or not what the function's schema accepts."""
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments) if arguments.strip() else {}
        except ValueError as e:
            return f"the arguments are not JSON ({e})"
    else:
        value = arguments
    if not isinstance(value, dict):
        return "the arguments are not a JSON object"
    from jsonschema import Draft202012Validator

    try:
        error = next(iter(Draft202012Validator(spec.parameters).iter_errors(value)), None)
    except Exception as e:  # a reference or keyword the validator cannot follow
        return f"the arguments could not be checked against the schema ({type(e).__name__})"
    if error is not None:
        path = "/".join(str(p) for p in error.path) or "(root)"
        return f"the arguments do not match the schema at {path}: {error.message}"
    return None


def call_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """The JSON Schema of one call to any of `tools`: `{"name": ..., "arguments": {...}}` (the
    grammar that constrains a forced or retried call)."""
    definitions: dict[str, Any] = {}
    options = []
    for tool in tools:
        parameters = dict(tool.parameters or {"type": "object"})
        # Local references (#/$defs/X) name the root: the definitions move up to the call's root.
        for key in ("$defs", "definitions"):
            if isinstance(parameters.get(key), dict):
                definitions.setdefault(key, {}).update(parameters.pop(key))
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, **definitions}


def new_call(name: str, arguments: Mapping[str, Any] | str) -> ToolCall:
    """A call with a fresh id (`call_...`, as OpenAI's) and its arguments as compact JSON."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ToolCall(f"call_{secrets.token_hex(12)}", name, text)
