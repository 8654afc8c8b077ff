"""The HTTP side of admission: each request's budget from its route, refusals before the body is
read, and refusals held for clients that come back before their Retry-After (core/admission.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.app.core.admission import route_group
from backend.app.core.backlog import Budget, budget
from backend.app.core.errors import AppError
from backend.app.core.middleware import send_error


class AdmissionBudgetMiddleware:
    """Sets the request's admission budget (`core/admission.budget`) from its path's route group
    and ADMISSION_BUDGETS, for the model stages to admit its work by (a WebSocket session's turns
    inherit their connection's)."""

    def __init__(self, app: ASGIApp, budgets: dict[str, float]) -> None:
        self.app = app
        self.budgets = budgets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        group = route_group(scope["path"]) if scope["type"] in ("http", "websocket") else None
        if group is None:
            await self.app(scope, receive, send)
            return
        token = budget.set(Budget(group, self.budgets.get(group)))
        try:
            await self.app(scope, receive, send)
        finally:
            budget.reset(token)


def plain_request(scope: Scope) -> str | None:
    """The route group of a plain request for model work (a POST to a model route, a spoken turn's
    `/conversation`), which its stages admit or refuse as a whole; None for anything else (a
    WebSocket, the set-up of a WebRTC or phone call, whose sessions admit each turn as it comes,
    a probe of /health)."""
    if scope["type"] != "http" or scope.get("method") != "POST":
        return None
    group = route_group(scope["path"])
    return group if group != "turn" or scope["path"] == "/conversation" else None


class EarlyRefusalMiddleware:
    """Refuses a request that its model stages could not admit whatever its size (503 with
    Retry-After, `refuse_early(group)`), before its body is read or anything is done for it:
    under overload, clients that do not wait as Retry-After asks cost the server little more than
    their connections, so the work it admitted keeps its pace. Plain HTTP requests only: a
    WebSocket or WebRTC session admits each of its turns when it comes."""

    def __init__(self, app: ASGIApp, refuse_early: Callable[[str], AppError | None]) -> None:
        self.app = app
        self.refuse_early = refuse_early

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        group = plain_request(scope)
        refusal = self.refuse_early(group) if group is not None else None
        if refusal is None:
            await self.app(scope, receive, send)
            return
        await send_error(
            scope, send, refusal.status_code, refusal.code, refusal.message, dict(refusal.headers)
        )


class EarlyReturnMiddleware:
    """Holds a refusal (503 or 429 with Retry-After) for a client that came back before the time
    its last refusal gave, until that time: a client that honours Retry-After never waits here,
    and one that does not is answered at the pace it was asked to keep, rather than at the pace it
    sends, so that what it sends costs the server no more than a patient client's requests (its
    requests are still admitted at once when there is room). Plain requests for model work only
    (`plain_request`): a probe polling /health/ready, or a call being set up, is answered at once.
    A client is its connection (address and port: one kept-alive connection); at most
    `max_wait_s` is held."""

    def __init__(self, app: ASGIApp, max_wait_s: float = 10.0, clients: int = 4096) -> None:
        self.app = app
        self.max_wait_s = max_wait_s
        self.clients = clients
        self._until: dict[tuple[str, int], float] = {}
        """Per connection, when it may come back (monotonic), oldest first."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if not client or plain_request(scope) is None:
            await self.app(scope, receive, send)
            return
        key = (str(client[0]), int(client[1]))

        async def paced(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (429, 503):
                retry = _retry_after(message.get("headers", ()))
                if retry is not None:
                    now = time.monotonic()
                    early = self._until.pop(key, now) - now
                    if early > 0:
                        await asyncio.sleep(min(early, self.max_wait_s))
                    self._remember(key, time.monotonic() + retry)
            await send(message)

        await self.app(scope, receive, paced)

    def _remember(self, key: tuple[str, int], until: float) -> None:
        self._until[key] = until
        while len(self._until) > self.clients:  # the oldest refusals go first
            del self._until[next(iter(self._until))]


def _retry_after(headers: Any) -> float | None:
    for name, value in headers:
        if name.lower() == b"retry-after":
            try:
                return float(value)
            except ValueError:
                return None  # an HTTP date: not ours
    return None
