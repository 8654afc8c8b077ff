"""A realtime session over WebRTC, whatever its protocol: the peer connection (aiortc) answered
from the browser's SDP offer, the caller's audio into the session, the reply on our track, the
protocol's messages on one data channel, and the call's life (connect within CONNECT_TIMEOUT_S,
end at WS_MAX_SESSION_S, on the peer's hang-up or ours), after which everything it held is freed.

Each protocol (OpenAI's Realtime on /v1/realtime/calls, ours on /conversation/calls) builds its
session, hands `answer` a `handle` for its messages, and returns the answer's SDP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from fastapi import Response

from backend.app.api.protocols.calls import Calls
from backend.app.api.protocols.webrtc_audio import Feed, ReplyTrack, listen
from backend.app.core.config import Settings
from backend.app.core.errors import InvalidInputError, QuotaError
from backend.app.core.quotas import current_account

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20.0
"""A call whose peer has not connected (ICE and DTLS) this long after the answer is closed."""

MAX_SDP_BYTES = 64 * 1024
MAX_QUEUED_MESSAGES = 256
"""Client messages waiting to be handled; more are dropped."""

_AIORTC_ERRORS = (InternalError, InvalidAccessError, InvalidStateError, OperationError)

FLUSH_S = 1.0
"""At the end of a call, its last messages (an error, `session_end`) get this long to go out."""

Handle = Callable[[str | None], Awaitable[bool]]
"""A protocol's handler of one client message (None: one over the size limit); False ends the call."""


class Call:
    """One WebRTC call: its peer connection, and the messages waiting each way."""

    def __init__(self, call_id: str, pc: RTCPeerConnection, label: str) -> None:
        self.id = call_id
        self.pc = pc
        self.label = label
        self.channel: Any = None
        self.pending: list[str] = []
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue(MAX_QUEUED_MESSAGES)
        self.connected = asyncio.Event()
        self.ended = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, text: str) -> None:
        """A message to the peer; held until the data channel opens."""
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        elif len(self.pending) < MAX_QUEUED_MESSAGES:
            self.pending.append(text)


def ice_servers(urls: list[str]) -> list[RTCIceServer]:
    """WEBRTC_ICE_SERVERS as aiortc's: `turn:user:password@host:port` carries its credentials."""
    servers = []
    for url in urls:
        scheme, _, rest = url.partition(":")
        credentials, at, host = rest.rpartition("@")
        if at:
            user, _, password = credentials.partition(":")
            servers.append(RTCIceServer(urls=f"{scheme}:{host}", username=user, credential=password))
        else:
            servers.append(RTCIceServer(urls=url))
    return servers


def check_offer(sdp: str) -> str:
    """An SDP offer, or a 400 that says what is wrong with it."""
    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise InvalidInputError(f"An SDP offer may be at most {MAX_SDP_BYTES} bytes.", param="sdp")
    if not sdp.strip():
        raise InvalidInputError("Missing required parameter: 'sdp'.", param="sdp")
    if not sdp.lstrip().startswith("v=0"):
        raise InvalidInputError(
            "Invalid value for 'sdp': not an SDP offer (one begins with v=0).", param="sdp"
        )
    if "\nm=audio " not in sdp.replace("\r\n", "\n"):
        raise InvalidInputError("Invalid value for 'sdp': the offer has no audio (m=audio).", param="sdp")
    return sdp


async def answer(
    call: Call, sdp: str, track: ReplyTrack, feed: Feed, settings: Settings, stack: contextlib.AsyncExitStack
) -> str:
    """Answer `sdp` on `call`'s peer connection: the caller's audio to `feed`, `track` to play
    the reply. The connection is closed by `stack`."""
    stack.push_async_callback(call.pc.close)
    _wire(call, feed, settings.realtime.max_event_bytes)
    try:
        await call.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        call.pc.addTrack(track)
        await call.pc.setLocalDescription(await call.pc.createAnswer())
    except (ValueError, TypeError, KeyError, IndexError, *_AIORTC_ERRORS) as e:
        # A malformed offer, or one we cannot answer (no codec in common, no ICE credentials).
        why = str(e)[:200] or type(e).__name__
        raise InvalidInputError(f"Invalid value for 'sdp': {why}", param="sdp") from None
    return str(call.pc.localDescription.sdp)


def key_session(stack: contextlib.AsyncExitStack) -> None:
    """One of the calling key's realtime sessions (when keys are configured), given back when
    `stack` closes; the request itself was admitted by the middleware."""
    account = current_account.get()
    if account is None:
        return
    refusal = account.open_session()
    if refusal is not None:
        raise QuotaError(refusal.message, refusal.code, refusal.retry_after_s)
    stack.callback(account.end_session)


def answered(sdp: str, location: str) -> Response:
    """The 201 of an answered call: the SDP answer, and the call's URL."""
    return Response(sdp, status_code=201, media_type="application/sdp", headers={"Location": location})


def peer(settings: Settings) -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(settings.realtime.webrtc_ice_servers)))


def _wire(call: Call, feed: Feed, limit: int) -> None:
    """The peer connection's events: the caller's audio, the messages channel, its state."""
    pc = call.pc

    @pc.on("track")
    def on_track(track: Any) -> None:
        if track.kind == "audio":
            task = asyncio.create_task(listen(track, feed))
            call.tasks.add(task)
            task.add_done_callback(call.tasks.discard)

    @pc.on("datachannel")
    def on_channel(channel: Any) -> None:
        if channel.label != call.label or call.channel is not None:
            return
        call.channel = channel
        for text in call.pending:
            channel.send(text)
        call.pending.clear()

        @channel.on("message")  # type: ignore[untyped-decorator]
        def on_message(message: Any) -> None:
            text = message if isinstance(message, str) and len(message.encode()) <= limit else None
            with contextlib.suppress(asyncio.QueueFull):  # a flood beyond the queue is lost
                call.inbox.put_nowait(text)

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected":
            call.connected.set()
        elif pc.connectionState in ("failed", "closed"):
            call.ended.set()


def start(
    call: Call, calls: Calls, stack: contextlib.AsyncExitStack, handle: Handle, settings: Settings
) -> None:
    """The call runs on its own from here (answered): registered in `calls` until it ends."""
    calls.open[call.id] = call
    task = asyncio.create_task(_run(call, calls, stack, handle, settings.realtime.max_session_s))
    call.tasks.add(task)
    logger.info("webrtc call %s: answered", call.id)


async def _run(
    call: Call, calls: Calls, stack: contextlib.AsyncExitStack, handle: Handle, max_s: float
) -> None:
    """The call, from the answer to its end: its messages handled in order."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await _first(call.connected, call.ended)
        if call.connected.is_set() and not call.ended.is_set():
            async with asyncio.timeout(max_s):
                while not call.ended.is_set():
                    got, text = await _next(call)
                    if got and not await handle(text):
                        break
    except TimeoutError:
        why = "ended at its limit" if call.connected.is_set() else "never connected"
        logger.info("webrtc call %s: %s", call.id, why)
    except Exception:
        logger.exception("webrtc call %s failed", call.id)
    finally:
        await _flush(call)
        for task in list(call.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        calls.open.pop(call.id, None)
        with contextlib.suppress(Exception):
            await stack.aclose()
        logger.info("webrtc call %s: closed", call.id)


async def _flush(call: Call) -> None:
    """Let the data channel send what is queued before the connection closes (bounded)."""
    channel = call.channel
    deadline = time.monotonic() + FLUSH_S
    while channel is not None and channel.readyState == "open" and time.monotonic() < deadline:
        if not channel.bufferedAmount:
            await asyncio.sleep(0.1)  # queued in SCTP: let it go out on the wire
            return
        await asyncio.sleep(0.02)


async def _first(*flags: asyncio.Event) -> None:
    waits = [asyncio.create_task(flag.wait()) for flag in flags]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def _next(call: Call) -> tuple[bool, str | None]:
    """(True, the next client message) or (False, None) when the call ended first."""
    get = asyncio.create_task(call.inbox.get())
    end = asyncio.create_task(call.ended.wait())
    done, _ = await asyncio.wait({get, end}, return_when=asyncio.FIRST_COMPLETED)
    for task in (get, end):
        if task not in done:
            task.cancel()
    return (True, get.result()) if get in done else (False, None)


async def hang_up(calls: Calls, call_id: str) -> bool:
    call = calls.open.get(call_id)
    if call is None:
        return False
    call.ended.set()
    return True
