"""How every wire protocol finds the handler of a client's message: a `Dispatch` table per
protocol, filled by decorating the protocol's methods with the message types they handle.

    MESSAGES: Dispatch[OwnProtocol, dict[str, Any]] = Dispatch()

    class OwnProtocol:
        @MESSAGES.on("start")
        async def start(self, message: dict[str, Any]) -> None: ...

    handler = MESSAGES.find(kind)  # None: a type the protocol does not know
    await handler(protocol, message)

What an unknown type means is the protocol's own rule (ours ends the connection, OpenAI's answers
an error event, Wyoming drops the events of its other programs), so `find` only looks it up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

P = TypeVar("P")
M = TypeVar("M")

Handler = Callable[[P, M], Awaitable[None]]


class Dispatch(Generic[P, M]):
    """A protocol's message types and the method that handles each."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler[P, M]] = {}

    def on(self, *kinds: str) -> Callable[[Handler[P, M]], Handler[P, M]]:
        """Register the decorated method as the handler of `kinds` (each at most once)."""

        def register(handler: Handler[P, M]) -> Handler[P, M]:
            for kind in kinds:
                if kind in self._handlers:
                    raise ValueError(f"{kind!r} has two handlers")
                self._handlers[kind] = handler
            return handler

        return register

    @property
    def kinds(self) -> tuple[str, ...]:
        """The message types handled, in the order they were registered."""
        return tuple(self._handlers)

    def find(self, kind: object) -> Handler[P, M] | None:
        """The handler of `kind`, None when it is not a type handled here (or not a string)."""
        return self._handlers.get(kind) if isinstance(kind, str) else None
