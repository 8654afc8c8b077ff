"""The Wyoming server: started and stopped by the app's lifespan (WYOMING_URI), one `Connection`
per client over the app's own services, at most WYOMING_MAX_CONNECTIONS at once, and optionally
announced over zeroconf (`_wyoming._tcp`) for Home Assistant to discover."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from wyoming.error import Error

from backend.app.api.protocols.wyoming.access import LOOPBACK, auth_configured
from backend.app.api.protocols.wyoming.connection import Connection
from backend.app.api.protocols.wyoming.protocol import HEADER_LIMIT, EventWriter
from backend.app.audio.pcm import AudioBudget
from backend.app.container import ServiceGate
from backend.app.core.config import Settings
from backend.app.core.memory import request_trim

logger = logging.getLogger(__name__)

_REFUSAL_LINGER_S = 1.0  # how long a refused connection is drained before it is closed


class WyomingServer:
    def __init__(
        self,
        settings: Settings,
        gate: ServiceGate,
        observe: Callable[[str, str], None] | None = None,
        connections: Any = None,
    ) -> None:
        self.settings = settings
        self._gate = gate
        self._observe = observe or (lambda kind, outcome: None)
        self._gauge = connections
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_client: dict[str, int] = {}
        self.budget = AudioBudget(int(settings.wyoming.max_buffered_mb * 1024 * 1024))
        self.own_conversations = auth_configured(settings)
        """Wyoming has no authentication: when HTTP needs a key, its conversations are its own."""
        self._zeroconf: Any = None
        self.port: int | None = None
        """The TCP port listened on (the one the OS chose for `tcp://host:0`)."""

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._tasks)

    async def start(self) -> None:
        uri = urlparse(self.settings.wyoming.uri)
        if uri.scheme == "unix":
            await asyncio.to_thread(Path(uri.path).unlink, missing_ok=True)
            self._server = await asyncio.start_unix_server(self._accept, path=uri.path, limit=HEADER_LIMIT)
            logger.info("Wyoming server listening on %s", self.settings.wyoming.uri)
            self._say_reach(uri.path)
            return
        host = uri.hostname or "127.0.0.1"
        if self.own_conversations and host not in LOOPBACK and not self.settings.wyoming.public:
            logger.warning(
                "Wyoming has no authentication and the HTTP API needs a key: it listens on 127.0.0.1, "
                "not %s, so that only this machine reaches it (set WYOMING_PUBLIC=true to listen there)",
                host,
            )
            host = "127.0.0.1"
        self._server = await asyncio.start_server(self._accept, host=host, port=uri.port, limit=HEADER_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("Wyoming server listening on tcp://%s:%d", host, self.port)
        self._say_reach(host)
        if self.settings.wyoming.zeroconf:
            await self._announce(host, self.port)

    async def stop(self) -> None:
        """Stop listening, end every connection (their requests are cancelled), withdraw the
        announcement."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        uri = urlparse(self.settings.wyoming.uri)
        if uri.scheme == "unix":
            await asyncio.to_thread(Path(uri.path).unlink, missing_ok=True)
        if self._zeroconf is not None:
            with contextlib.suppress(Exception):
                await self._zeroconf.async_close()
            self._zeroconf = None

    def _say_reach(self, where: str) -> None:
        if self.own_conversations:
            logger.warning(
                "Wyoming (%s) has no authentication: whoever reaches it can transcribe, synthesise "
                "and talk in conversations of its own (ids wyoming-...); the conversations, voices "
                "and keys of the HTTP API are out of its reach",
                where,
            )
        else:
            logger.info(
                "Wyoming (%s) has no authentication, like the HTTP API here (no API_KEY): whoever "
                "reaches it can transcribe, synthesise and continue any conversation",
                where,
            )

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: str) -> None:
        self._observe("connection", "overloaded")
        with contextlib.suppress(Exception):
            out = EventWriter(writer, 5)
            await out.write(Error(text=message, code="overloaded").event())
            # A lingering close: closing with the peer's unread bytes (a ping sent meanwhile) in the
            # receive buffer makes the kernel reset the connection, and a reset can discard the
            # error above before the peer reads it. Say end-of-stream, then drop what still comes
            # for a moment.
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(_REFUSAL_LINGER_S):
                while await reader.read(4096):
                    pass
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        wyoming = self.settings.wyoming
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""  # "" for a Unix socket
        if self.connections >= wyoming.max_connections:
            await self._refuse(
                reader, writer, f"{wyoming.max_connections} connections are open; retry shortly"
            )
            return
        if client and self._per_client.get(client, 0) >= wyoming.max_connections_per_client:
            await self._refuse(
                reader,
                writer,
                f"{wyoming.max_connections_per_client} connections from {client} are open, the most one "
                "address may hold (WYOMING_MAX_CONNECTIONS_PER_CLIENT); retry shortly",
            )
            return
        self._tasks.add(task)
        if client:
            self._per_client[client] = self._per_client.get(client, 0) + 1
        if self._gauge is not None:
            self._gauge.inc()
        try:
            connection = Connection(
                reader,
                writer,
                self._gate,
                self.settings,
                self._observe,
                budget=self.budget,
                own_conversations=self.own_conversations,
            )
            await connection.run()
        except Exception:  # Connection.run lets nothing out; this is the last guard
            logger.exception("wyoming connection failed")
        finally:
            self._tasks.discard(task)
            if client:
                left = self._per_client.get(client, 1) - 1
                if left > 0:
                    self._per_client[client] = left
                else:
                    self._per_client.pop(client, None)
            if self._gauge is not None:
                self._gauge.dec()
            if not self._tasks:
                request_trim()  # the last connection is gone: give freed buffers back

    async def _announce(self, host: str, port: int) -> None:
        """Register `_wyoming._tcp` on mDNS (the zeroconf package, imported only when asked for)."""
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        address = host if host not in ("0.0.0.0", "::", "") else _lan_address()
        name = self.settings.wyoming.zeroconf_name
        info = AsyncServiceInfo(
            "_wyoming._tcp.local.",
            f"{name}._wyoming._tcp.local.",
            addresses=[socket.inet_aton(address)],
            port=port,
        )
        self._zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
        try:
            await self._zeroconf.async_register_service(info)
        except Exception as e:  # no multicast here: serve anyway, say why it is not announced
            logger.warning("could not announce the Wyoming server over zeroconf: %s", e)
            await self._zeroconf.async_close()
            self._zeroconf = None
            return
        logger.info("Wyoming server announced over zeroconf as %r at %s:%d", name, address, port)


def _lan_address() -> str:
    """The address other machines reach this one at (the interface a multicast packet would leave by)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("224.0.0.251", 5353))  # nothing is sent: this only picks a route
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
