"""JSON that is safe to hand to the parser, the validators and the models.

Two things in valid JSON break what comes after it: nesting thousands of levels deep (Python's
parser and pydantic recurse: a RecursionError), and `\\ud800`-style escapes of unpaired surrogates,
which decode to a `str` that cannot be encoded (a tokenizer, a file path, a log line fail on it).
`check_json_bytes` bounds the depth by counting brackets before anything is parsed, then parses and
finds any string (key or value) that is not valid Unicode, naming where it is.
`core.middleware.JSONGuardMiddleware` applies it to every JSON request body before a route sees it;
the realtime WebSockets apply it to each text message, and Wyoming to each event's JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from backend.app.core.errors import InvalidInputError

MAX_JSON_DEPTH = 64
"""Deeper than any request of ours or OpenAI's needs (a chat message's content parts are 4 deep)."""

MAX_NUMBER_DIGITS = 100
"""The longest integer literal accepted. Python refuses to convert an integer of more than 4,300
digits to or from text (a ValueError deep in whatever touches it), and no field of ours needs 100."""


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise InvalidInputError(f"a number in the JSON has more than {MAX_NUMBER_DIGITS} digits")
    return int(literal)


def loads(raw: bytes | str) -> Any:
    """`json.loads` with integer literals bounded (`MAX_NUMBER_DIGITS`; InvalidInputError past it).
    The caller bounds the depth first (`json_depth`)."""
    return json.loads(raw, parse_int=_bounded_int)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = np.frombuffer(b"[{", np.uint8)


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in `data` (brackets inside strings ignored)."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, np.uint8)
    steps = np.where(np.isin(codes, _OPEN), 1, -1)
    return int(np.cumsum(steps).max())


def _path(parts: list[str | int]) -> str:
    return ".".join(str(p) for p in parts) or "body"


def invalid_text_at(value: Any) -> str | None:
    """Where in a parsed JSON value a string is not valid Unicode (an unpaired surrogate), or None."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return _path(path)
        elif isinstance(item, dict):
            for key, child in item.items():
                if not _encodable(key):
                    return _path([*path, "(a key)"])
                stack.append((child, [*path, key]))
        elif isinstance(item, list):
            stack.extend((child, [*path, i]) for i, child in enumerate(item))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_json_bytes(data: bytes | str) -> Any:
    """Parse JSON after bounding its depth; 422 for depth, invalid UTF-8, unpaired surrogates or
    an integer too long to convert.

    Malformed JSON raises `json.JSONDecodeError` as `json.loads` does (callers word that error)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise InvalidInputError(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = loads(raw)
    except UnicodeDecodeError as e:
        raise InvalidInputError("the JSON body is not valid UTF-8") from e
    where = invalid_text_at(value)
    if where is not None:
        raise InvalidInputError(
            f"{where}: the text is not valid Unicode (an unpaired surrogate, an invalid "
            "\\ud800-\\udfff escape)",
            param=where,
        )
    return value
