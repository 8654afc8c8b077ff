"""API keys: who may call the server, on which routes, within which quotas.

Keys come from `API_KEY` (one key named `default`, every scope, no quota) and from the TOML file
`API_KEYS_FILE`, both at once when both are set. A key is kept only as its SHA-256 digest; a
supplied key is hashed and compared with every configured digest in constant time
(`KeyRing.match`). Nothing here ever puts a key in a message, a log line or a `repr`.

```toml
[[keys]]
name = "kitchen"
key_sha256 = "<hex SHA-256 of the key>"   # or key = "<the key itself>"
scopes = ["stages", "conversation", "realtime"]   # default: every scope
requests_per_minute = 60
realtime_sessions = 1
audio_seconds_per_day = 3600
```
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

ScopeName = Literal["stages", "conversation", "realtime", "voices", "metrics", "tools"]
SCOPES: tuple[ScopeName, ...] = get_args(ScopeName)
"""The route groups a key may be given (README: API keys)."""

DEFAULT_KEY_NAME = "default"
"""The name `API_KEY` goes by: in the access lines, the metrics and the error messages."""

NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


@dataclass(frozen=True)
class Quotas:
    """A key's limits; None is no limit."""

    requests_per_minute: int | None = None
    """HTTP requests and WebSocket handshakes in any 60 s."""
    realtime_sessions: int | None = None
    """Realtime WebSocket sessions open at once (/ws/conversation and /v1/realtime together)."""
    audio_seconds_per_day: float | None = None
    """Seconds of audio transcribed plus audio synthesised in one UTC day."""


@dataclass(frozen=True)
class ApiKey:
    """A configured key: its name, the SHA-256 digest of its secret, its scopes and quotas."""

    name: str
    digest: bytes = field(repr=False)
    scopes: frozenset[ScopeName] = frozenset(SCOPES)
    quotas: Quotas = Quotas()


class KeyFileError(ValueError):
    """API_KEYS_FILE (or API_KEY beside it) cannot be used; the message names the problem, never a key."""


class _Entry(BaseModel):
    """One `[[keys]]` table, as written (strict: TOML has real types, so a quoted number is a mistake)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    key: SecretStr | None = None
    key_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    scopes: list[ScopeName] | None = None
    requests_per_minute: Annotated[int, Field(ge=1, le=100_000)] | None = None
    realtime_sessions: Annotated[int, Field(ge=0, le=10_000)] | None = None
    audio_seconds_per_day: Annotated[float, Field(ge=0)] | None = None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    keys: list[dict[str, object]] = Field(min_length=1)


def digest_of(secret: str | bytes) -> bytes:
    """The SHA-256 digest a key is kept and compared as."""
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


def _describe(e: ValidationError, where: str) -> str:
    """Pydantic's errors without the values (a bad `key` would be printed back otherwise)."""
    parts = []
    for error in e.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "string_pattern_mismatch" and error["loc"][:1] == ("name",):
            message = "a name is 1-64 letters, digits, '.', '_' or '-'"
        elif error["type"] == "string_pattern_mismatch":
            message = "key_sha256 must be 64 hexadecimal digits (the SHA-256 of the key)"
        elif error["type"] == "literal_error":
            message = f"unknown scope; the scopes are {', '.join(SCOPES)}"
        parts.append(f"{where}.{location}: {message}" if location else f"{where}: {message}")
    return "; ".join(parts)


def _entry(raw: dict[str, object], index: int) -> ApiKey:
    where = f"keys[{index}]"
    name = raw.get("name")
    if isinstance(name, str) and len(name) <= 64 and name.isprintable():
        where += f" ({name!r})"
    try:
        entry = _Entry.model_validate(raw)
    except ValidationError as e:
        raise KeyFileError(_describe(e, where)) from None
    if (entry.key is None) == (entry.key_sha256 is None):
        raise KeyFileError(f"{where}: give either `key` or `key_sha256`, not both and not neither")
    if entry.key is not None:
        secret = entry.key.get_secret_value()
        if not secret or secret != secret.strip() or not secret.isprintable():
            raise KeyFileError(f"{where}.key: a key must be printable, without spaces at its ends")
        digest = digest_of(secret)
    else:
        digest = bytes.fromhex(entry.key_sha256 or "")
    scopes = SCOPES if entry.scopes is None else tuple(entry.scopes)
    return ApiKey(
        name=entry.name,
        digest=digest,
        scopes=frozenset(scopes),
        quotas=Quotas(entry.requests_per_minute, entry.realtime_sessions, entry.audio_seconds_per_day),
    )


def parse_keys(text: str) -> list[ApiKey]:
    """The keys of a key file's text, checked: names and keys unique, fields known and typed."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise KeyFileError(f"not valid TOML ({e})") from None
    try:
        parsed = _File.model_validate(document)
    except ValidationError as e:
        raise KeyFileError(_describe(e, "the file") + " (expected one or more [[keys]] tables)") from None
    return unique([_entry(raw, index) for index, raw in enumerate(parsed.keys)])


def unique(keys: list[ApiKey]) -> list[ApiKey]:
    """`keys`, refused when two share a name or a secret (which would make the name a guess)."""
    names: set[str] = set()
    digests: dict[bytes, str] = {}
    for key in keys:
        if key.name in names:
            raise KeyFileError(f"the name {key.name!r} is given to two keys")
        names.add(key.name)
        if key.digest in digests:
            raise KeyFileError(f"the keys {digests[key.digest]!r} and {key.name!r} are the same key")
        digests[key.digest] = key.name
    return keys


def load_keys(api_key: str | None, keys_file: Path | None) -> list[ApiKey]:
    """Every configured key: API_KEY's (`default`, every scope, no quota), then the file's. Empty
    when neither is set (the server is open)."""
    keys = [ApiKey(DEFAULT_KEY_NAME, digest_of(api_key))] if api_key else []
    if keys_file is not None:
        try:
            text = keys_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise KeyFileError(f"API_KEYS_FILE {keys_file}: cannot be read ({e})") from None
        try:
            listed = parse_keys(text)
        except KeyFileError as e:
            raise KeyFileError(f"API_KEYS_FILE {keys_file}: {e}") from None
        if keys and any(key.name == DEFAULT_KEY_NAME for key in listed):
            raise KeyFileError(
                f"API_KEYS_FILE {keys_file}: the name {DEFAULT_KEY_NAME!r} is API_KEY's; choose another"
            )
        try:
            keys = unique(keys + listed)
        except KeyFileError as e:
            raise KeyFileError(f"API_KEYS_FILE {keys_file}: {e} (API_KEY is {DEFAULT_KEY_NAME!r})") from None
    return keys


class KeyRing:
    """The configured keys, matched against what a client sends."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = tuple(keys)

    def match(self, supplied: bytes) -> ApiKey | None:
        """The key whose secret `supplied` is, else None. The supplied key is hashed, and its
        digest compared with every key's in constant time, all of them whatever matched: the time
        taken says nothing about which key, or how much of one, was right."""
        digest = digest_of(supplied)
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found
