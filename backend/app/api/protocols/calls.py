"""The calls a transport holds open beyond the request that made them (WebRTC calls): by id, so
that a call can be hung up, and all of them ended before the server shuts down."""

from __future__ import annotations

import asyncio
from typing import Protocol


class OpenCall(Protocol):
    ended: asyncio.Event
    """Set to end the call; its tasks then close it."""
    tasks: set[asyncio.Task[None]]


class Calls:
    """The calls open now, by id."""

    def __init__(self) -> None:
        self.open: dict[str, OpenCall] = {}

    async def close_all(self) -> None:
        tasks = [task for call in self.open.values() for task in call.tasks]
        for call in list(self.open.values()):
            call.ended.set()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
