"""API keys at the door: who is calling (401), whether the key's scopes cover the route (403), and
whether its quotas leave room (429), for HTTP requests, Server-Sent Events and WebSockets alike.

A key comes as `Authorization: Bearer <key>`; a WebSocket may carry it as a subprotocol instead
(a browser cannot set headers on one): `bearer.<the key, base64url without padding>`, or OpenAI's
`openai-insecure-api-key.<key>`. The phone routes (/phone/...) also take HTTP Basic credentials
whose password is the key (a telephony webhook can carry no other), and the phone's media stream,
whose client can set neither headers nor subprotocols, carries its key inside its own protocol:
the middleware lets that WebSocket through with a `KeyCheck` the route applies. Refusals:

- HTTP: 401 `unauthorized` (with `WWW-Authenticate: Bearer`), 403 `forbidden`, 429 with
  `Retry-After` (`rate_limited`, `audio_quota_exceeded`), in the error shape of the path.
- WebSocket, no key or a missing scope: the handshake is refused (close code 1008 before it is
  accepted; the server answers HTTP 403), as with one API_KEY before.
- WebSocket over a quota: the handshake is accepted, an `error` event in the route's protocol
  names the limit, and the connection closes with 1013 (try again later), as when the server's own
  WS_MAX_SESSIONS are taken: a browser sees the reason, which it never sees of a refused handshake.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.app.core.errors import error_response_parts, is_openai_path
from backend.app.core.keys import SCOPES, ApiKey, KeyRing, ScopeName
from backend.app.core.middleware import send_error
from backend.app.core.quotas import Account, KeyLedger, Refusal, current_account

WS_KEY_PROTOCOL_PREFIX = "bearer."
"""How a browser sends its key on our WebSocket (base64url, no padding), beside `voice-dialogue`."""

OPENAI_KEY_PROTOCOL_PREFIX = "openai-insecure-api-key."
"""How a browser sends its key to OpenAI's Realtime API (the key as it is), beside `realtime`."""

KEY_CHECK_STATE = "key_check"
"""`scope["state"][KEY_CHECK_STATE]`: the `KeyCheck` of a WebSocket that carries its key in-band."""

IN_BAND_KEY_PATHS = frozenset({"/phone/twilio"})
"""WebSockets whose clients send the key inside the protocol (Twilio's media stream: a `start`
message's custom parameter)."""

KEY_STATE = "key_name"
"""`scope["state"][KEY_STATE]`: the name of the key a request came with (the access line's `key`)."""

ANY_KEY = "any key"
EVERY_SCOPE = "every scope"
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Rule:
    """Routes whose path matches `pattern` (and method, when `methods` is set) need `scope`
    (ANY_KEY: any valid key); `audio`: they may transcribe or synthesise (the daily audio quota)."""

    pattern: re.Pattern[str]
    scope: ScopeName | str
    audio: bool = False
    methods: frozenset[str] | None = None


def _rule(
    pattern: str, scope: ScopeName | str, *, audio: bool = False, methods: frozenset[str] | None = None
) -> Rule:
    return Rule(re.compile(pattern), scope, audio, methods)


RULES: tuple[Rule, ...] = (
    _rule(r"/(stt|tts)|/dev/captioned_speech", "stages", audio=True),
    _rule(r"/(chat|optimize)", "stages"),
    _rule(r"/v1/audio/(transcriptions|translations|speech)", "stages", audio=True),
    _rule(r"/v1/audio/voices", ANY_KEY),
    _rule(r"/v1/(chat/completions|models|models/.+)", "stages"),
    _rule(r"/api/asr/.+", "stages", audio=True),
    _rule(r"/api/.+", "stages"),
    _rule(r"/conversation/calls/[^/]+", "realtime"),  # a hang-up: never refused for audio used
    _rule(r"/conversation/calls", "realtime", audio=True),
    _rule(r"/conversation", "conversation", audio=True),
    _rule(r"/conversations(/[^/]+)?|/outputs/[^/]+", "conversation"),
    _rule(r"/v1/realtime/calls/[^/]+/hangup", "realtime"),
    _rule(r"/ws/conversation|/v1/realtime|/v1/realtime/calls|/phone/.+", "realtime", audio=True),
    _rule(r"/voices(/[^/]+)?|/casts/[^/]+", "voices", methods=_WRITES),
    _rule(r"/voices|/speaker_info|/casts(/[^/]+)?", ANY_KEY),
    _rule(r"/metrics", "metrics"),
    _rule(r"/docs|/docs/oauth2-redirect|/redoc|/openapi\.json", ANY_KEY),
)
"""Every route and the scope it needs, first match wins. A path no rule matches needs a key with
every scope (a route added without a rule is closed to scoped keys, never open to them)."""

_UNLISTED = Rule(re.compile(""), EVERY_SCOPE)


def rule_for(method: str, path: str) -> Rule:
    """The rule of a request: `method` (`WS` for a WebSocket) and its path."""
    path = path.rstrip("/") or "/"
    for rule in RULES:
        if (rule.methods is None or method in rule.methods) and rule.pattern.fullmatch(path):
            return rule
    return _UNLISTED


def is_public(path: str) -> bool:
    """The health checks and the browser page (which asks for the key itself) need no key."""
    return path.startswith("/health") or path == "/" or path.startswith("/static/")


def supplied_keys(scope: Scope) -> list[bytes]:
    """The keys a request carries: its bearer token, then (a WebSocket) a key subprotocol."""
    found = []
    scheme, _, token = dict(scope["headers"]).get(b"authorization", b"").strip().partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():  # the scheme is case-insensitive (RFC 9110)
        found.append(token.strip())
    if scheme.lower() == b"basic" and scope["path"].startswith("/phone/"):
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (ValueError, binascii.Error):
            user = password = b""
        if password or user:
            found.append(password or user)
    if scope["type"] == "websocket":
        key = _websocket_key(scope.get("subprotocols", []))
        if key is not None:
            found.append(key)
    return found


def _websocket_key(protocols: list[str]) -> bytes | None:
    for protocol in protocols:
        if protocol.startswith(OPENAI_KEY_PROTOCOL_PREFIX):
            return protocol[len(OPENAI_KEY_PROTOCOL_PREFIX) :].encode()
        if protocol.startswith(WS_KEY_PROTOCOL_PREFIX):
            encoded = protocol[len(WS_KEY_PROTOCOL_PREFIX) :]
            try:
                return base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
            except (ValueError, binascii.Error):
                return None
    return None


def _carries_key(protocol: str) -> bool:
    return protocol.startswith((WS_KEY_PROTOCOL_PREFIX, OPENAI_KEY_PROTOCOL_PREFIX))


class ApiKeyMiddleware:
    """Every route except /health* and the page needs a configured key whose scopes cover it and
    whose quotas leave room. The key's account is the request's `current_account` (the services
    add the audio they make to it) and its name is `scope["state"]["key_name"]`."""

    def __init__(self, app: ASGIApp, ring: KeyRing, ledger: KeyLedger) -> None:
        self.app = app
        self.ring = ring
        self.ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # CORS preflight carries no credentials
            return
        key = None
        supplied = supplied_keys(scope)
        for secret in supplied:
            key = key or self.ring.match(secret)
        if not supplied and scope["type"] == "websocket" and scope["path"] in IN_BAND_KEY_PATHS:
            scope.setdefault("state", {})[KEY_CHECK_STATE] = KeyCheck(self.ring, self.ledger, scope["path"])
            await self.app(scope, receive, send)
            return
        if key is None:
            self.ledger.unauthorized()
            message = "missing or wrong API key (Authorization: Bearer <key>)"
            await self._refuse(scope, receive, send, Refusal(401, "unauthorized", message))
            return
        scope.setdefault("state", {})[KEY_STATE] = key.name
        websocket = scope["type"] == "websocket"
        method = "WS" if websocket else scope["method"]
        rule = rule_for(method, scope["path"])
        account = self.ledger.account(key)
        if not _allows(key, rule):
            account.refuse("forbidden")
            await self._refuse(
                scope, receive, send, Refusal(403, "forbidden", _forbidden(key.name, rule, scope))
            )
            return
        refusal = account.admit(audio=rule.audio, session=websocket)
        if refusal is not None:
            await self._refuse(scope, receive, send, refusal)
            return
        await self._serve(scope, receive, send, account, websocket)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, account: Account, session: bool
    ) -> None:
        token = current_account.set(account)
        try:
            await self.app(scope, receive, send)
        finally:
            current_account.reset(token)
            if session:
                account.end_session()

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
        if scope["type"] == "http":
            challenge = (
                'Bearer, Basic realm="voice-dialogue"' if scope["path"].startswith("/phone/") else "Bearer"
            )
            headers = {"www-authenticate": challenge} if refusal.status == 401 else {}
            if refusal.retry_after_s is not None:
                headers["retry-after"] = str(refusal.retry_after_s)
            await send_error(scope, send, refusal.status, refusal.code, refusal.message, headers)
        elif refusal.status in (401, 403):
            await send({"type": "websocket.close", "code": 1008})
        else:
            await _close_over_quota(scope, receive, send, refusal)


class KeyCheck:
    """The door of a WebSocket that carries its key inside its protocol: `admit` the key once the
    client has sent it; the route ends the account's session (`Account.end_session`) when it closes."""

    def __init__(self, ring: KeyRing, ledger: KeyLedger, path: str) -> None:
        self._ring = ring
        self._ledger = ledger
        self._rule = rule_for("WS", path)
        self._path = path

    def admit(self, secret: str) -> Account | Refusal:
        key = self._ring.match(secret.encode()) if secret else None
        if key is None:
            self._ledger.unauthorized()
            return Refusal(401, "unauthorized", "missing or wrong API key")
        account = self._ledger.account(key)
        if not _allows(key, self._rule):
            account.refuse("forbidden")
            return Refusal(403, "forbidden", f"key {key.name!r} lacks the scope {self._rule.scope!r}")
        refusal = account.admit(audio=True, session=True)
        return account if refusal is None else refusal


def _allows(key: ApiKey, rule: Rule) -> bool:
    if rule.scope == ANY_KEY:
        return True
    if rule.scope == EVERY_SCOPE:
        return key.scopes >= set(SCOPES)
    return rule.scope in key.scopes


def _forbidden(name: str, rule: Rule, scope: Scope) -> str:
    if rule.scope == EVERY_SCOPE:
        return f"key {name!r} may not use {scope['path']}: only a key with every scope may"
    return f"key {name!r} lacks the scope {rule.scope!r}, which {scope['path']} needs"


async def _close_over_quota(scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
    """Accept the handshake, say which limit in an error event of the route's protocol, close 1013."""
    if (await receive())["type"] != "websocket.connect":
        return
    offered = [p for p in scope.get("subprotocols", []) if not _carries_key(p)]
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    _, body = error_response_parts(scope["path"], refusal.status, refusal.code, refusal.message)
    if is_openai_path(scope["path"]):
        event = {"type": "error", "event_id": f"event_{secrets.token_hex(10)}", **body}
    else:
        event = {"type": "error", **body["error"]}
    await send({"type": "websocket.send", "text": json.dumps(event)})
    await send({"type": "websocket.close", "code": 1013, "reason": refusal.message[:120]})
