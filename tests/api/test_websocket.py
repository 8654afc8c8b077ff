"""The realtime WebSockets' shared sender and receiver: a client that stops reading is given up
on (its session then ends and frees its workers), and a cancel during a send is never lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backend.app.api.protocols.websocket import ClientGone, Limit, Receiver, Sender


class StuckClient:
    """A WebSocket whose client stopped reading: sends never complete; nothing is received."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError


class CuttingClient(StuckClient):
    """Sends complete at once, but each first cancels the task sending (a cut that comes just as
    a send completes)."""

    def __init__(self) -> None:
        super().__init__()
        self.victim: asyncio.Task[None] | None = None

    async def send(self, message: dict[str, Any]) -> None:
        assert self.victim is not None
        self.victim.cancel()
        self.sent.append(message)


def test_a_client_that_stops_reading_is_given_up_on() -> None:
    async def run() -> tuple[Sender, float]:
        sender = Sender(StuckClient(), timeout_s=0.2)  # type: ignore[arg-type]
        with pytest.raises(ClientGone):
            await sender.text("{}")
        began = asyncio.get_running_loop().time()
        with pytest.raises(ClientGone):  # at once, not after another timeout
            await sender.bytes(b"\x00\x00")
        receiver = Receiver(sender.websocket, sender, idle_timeout_s=60, max_session_s=60)
        with pytest.raises(ClientGone):
            await receiver.next(lambda: False)
        return sender, asyncio.get_running_loop().time() - began

    sender, after = asyncio.run(run())
    assert sender.gone and after < 0.1


def test_a_cancel_during_a_send_is_never_swallowed() -> None:
    """A reply cut while one of its sends completes must stop (Python 3.11's wait_for returns
    the send's result and drops such a cancellation: the reply then played on)."""

    async def run() -> tuple[asyncio.Task[None], int]:
        client = CuttingClient()
        sender = Sender(client, timeout_s=5)  # type: ignore[arg-type]

        async def reply() -> None:
            for _ in range(3):
                await sender.text("{}")
                await asyncio.sleep(0)  # the reply's own work between sends (TTS, the LLM)

        task = asyncio.create_task(reply())
        client.victim = task
        await asyncio.wait([task])
        return task, len(client.sent)

    task, sent = asyncio.run(run())
    assert task.cancelled() and sent == 1


def test_the_idle_timeout_waits_while_a_reply_is_made() -> None:
    async def run() -> None:
        client = StuckClient()
        sender = Sender(client, timeout_s=1)  # type: ignore[arg-type]
        receiver = Receiver(client, sender, idle_timeout_s=0.3, max_session_s=60)  # type: ignore[arg-type]
        with pytest.raises(TimeoutError):  # busy: no Limit within 1.2 s
            await asyncio.wait_for(receiver.next(lambda: True), 1.2)
        with pytest.raises(Limit, match="idle_timeout"):
            await asyncio.wait_for(receiver.next(lambda: False), 3)

    asyncio.run(run())
