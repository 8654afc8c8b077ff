"""Wyoming events on a stream, read with bounds: a JSON header line, optional JSON data and a
binary payload, each length checked before anything is read. The `wyoming` library's own reader
reads whatever length a client declares; this one refuses what is over the limit first.

Writing uses the library's serialisation (our events are ours to size)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Iterable
from typing import Any, TypeVar, cast

from wyoming import (
    asr,
    audio,
    error,
    handle,
    info,
    intent,
    ping,
    pipeline,
    satellite,
    snd,
    timer,
    tts,
    user_event,
    vad,
    wake,
)
from wyoming.error import Error
from wyoming.event import Event, Eventable, write_event
from wyoming.tts import SynthesizeVoice

from backend.app.api.protocols.errors import ProtocolError
from backend.app.core.errors import AppError, ClientGone
from backend.app.core.json_guard import check_json_bytes

HEADER_LIMIT = 64 * 1024
"""The longest header line (the JSON before its data and payload): headers are a few dozen bytes."""


def _types(*modules: Any) -> frozenset[str]:
    """Every event type the library defines (its modules' `_*_TYPE` constants)."""
    found = set()
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("_") and name.endswith("_TYPE") and isinstance(value, str):
                found.add(value)
    return frozenset(found)


KNOWN_TYPES = _types(
    asr, audio, error, handle, info, intent, ping, pipeline, satellite, snd, timer, tts, user_event, vad, wake
)
"""Wyoming's event types. A client's event of one of these that we do not serve is dropped, as the
protocol asks (newer clients send events older servers do not know); any other type is malformed."""


async def read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next event's header line (None at a clean end of stream). Cancelling the wait loses
    nothing: asyncio's reader consumes a line only once it has all of it."""
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's LimitOverrunError: a "line" longer than the stream's limit
        raise ProtocolError(f"an event header is longer than {HEADER_LIMIT} bytes") from None
    except (ConnectionError, OSError):
        raise ClientGone from None
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise ClientGone  # the stream ended inside a header
    return line


async def read_rest(reader: asyncio.StreamReader, line: bytes, max_bytes: int, timeout_s: float) -> Event:
    """The event `line` heads: its data and payload, whose lengths are checked before anything is
    read, and which must follow within `timeout_s`."""
    header = _parse_object(line, "header")
    kind = header.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("an event header needs a string 'type'")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError(f"the data of {kind!r} must be a JSON object")
    data_length = _length(header, "data_length", kind, max_bytes)
    payload_length = _length(header, "payload_length", kind, max_bytes)
    if data_length + payload_length > max_bytes:
        raise ProtocolError(
            f"{kind!r} declares {data_length + payload_length} bytes; the limit is {max_bytes}",
            code="payload_too_large",
        )
    payload: bytes | None = None
    try:
        async with asyncio.timeout(timeout_s):
            if data_length:
                extra = _parse_object(await reader.readexactly(data_length), f"data of {kind!r}")
                data = {**data, **extra}
            if payload_length:
                payload = await reader.readexactly(payload_length)
    except TimeoutError:
        raise ProtocolError(f"{kind!r} declared more bytes than were sent within {timeout_s:g} s") from None
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        raise ClientGone from None
    return Event(type=kind, data=data, payload=payload)


def _parse_object(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object, checked as every JSON body is (`check_json_bytes`: its depth bounded before it
    is parsed, its integers bounded in length, its text valid Unicode)."""
    try:
        value = check_json_bytes(raw)
    except AppError as e:
        # A fault in one field (it names it) is invalid input; one of the whole event breaks the protocol.
        code = "invalid_input" if e.param else "protocol_error"
        raise ProtocolError(f"the event {what}: {e.message}", code=code) from None
    except ValueError:  # JSONDecodeError
        raise ProtocolError(f"the event {what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"the event {what} must be a JSON object")
    return value


def _length(header: dict[str, Any], key: str, kind: str, max_bytes: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{key} of {kind!r} must be a non-negative integer")
    if value > max_bytes:
        raise ProtocolError(
            f"{kind!r} declares a {key} of {value} bytes; the limit is {max_bytes}", code="payload_too_large"
        )
    return value


class EventWriter:
    """Writes whole events, one at a time, each within `timeout_s` (a client that stops reading is
    treated as gone, and its connection closed)."""

    def __init__(self, writer: asyncio.StreamWriter, timeout_s: float) -> None:
        self._writer = writer
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self.last_write = time.monotonic()
        """When an event last went out (a streamed synthesis is under way while it speaks)."""

    async def write(self, event: Event) -> None:
        await self.write_many((event,))

    async def write_many(self, events: Iterable[Event]) -> None:
        """Several events in one write and one wait for the client to take them (a segment's
        audio chunks: the library's writer waits once per event)."""
        buffer = io.BytesIO()
        for event in events:
            write_event(event, buffer)
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout_s):
                    self._writer.write(buffer.getvalue())
                    await self._writer.drain()
            except (TimeoutError, ConnectionError, OSError):
                raise ClientGone from None
            self.last_write = time.monotonic()


LINGER_S = 1.0
"""After refusing a client, how long what it is still sending is read and thrown away: closing a
socket with unread data resets it, and the client might lose the error event that says why."""


async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, linger: bool = False) -> None:
    """Close the connection; with `linger`, half-close first and drain the client's unread bytes
    (for at most LINGER_S and 16 MiB) so that it reads our last event, then the end of the stream."""
    with contextlib.suppress(Exception):
        if linger and writer.can_write_eof():
            writer.write_eof()
            async with asyncio.timeout(LINGER_S):
                drained = 0
                while drained < 16 * 1024 * 1024 and (data := await reader.read(65_536)):
                    drained += len(data)
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1):
            await writer.wait_closed()


def error_event(error: AppError | ProtocolError) -> Event:
    """The `error` event for a refused request: its message and its code (`overloaded`,
    `invalid_input`, `not_found`, ... as the HTTP routes' JSON errors name them)."""
    return Error(text=error.message, code=error.code).event()


E = TypeVar("E", bound=Eventable)


def parse(kind: type[E], event: Event) -> E:
    """The library's reading of `event`, a missing or mistyped field a protocol error."""
    try:
        return cast(E, kind.from_event(event))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        detail = f"missing {e.args[0]!r}" if isinstance(e, KeyError) else (str(e) or type(e).__name__)
        raise ProtocolError(f"malformed {event.type!r} event: {detail}") from None


def check_str(value: object, kind: str, required: bool = False) -> None:
    if (value is None and not required) or isinstance(value, str):
        return
    raise ProtocolError(f"malformed {kind!r} event: expected a string, got {type(value).__name__}")


def check_strings(value: object, kind: str, field: str) -> list[str]:
    """An optional list of strings (None: empty)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProtocolError(f"malformed {kind!r} event: {field} must be a list of strings")
    return value


def check_voice(voice: SynthesizeVoice | None) -> None:
    if voice is not None:
        for value in (voice.name, voice.speaker, voice.language):
            check_str(value, "voice")
