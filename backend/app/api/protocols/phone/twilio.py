"""Phone calls: Twilio's Media Streams protocol (a bidirectional stream, `<Connect><Stream>`) on
WebSocket /phone/twilio, and the TwiML that connects a call to it on /phone/twilio/twiml.

Twilio sends JSON text messages: `connected`, `start` (the stream's and call's ids, the media
format, the `<Parameter>`s of the TwiML as `customParameters`), `media` (base64 µ-law at 8 kHz,
20 ms a message), `mark` (a mark we sent, echoed once the audio before it has been played),
`dtmf` and `stop`. We send `media` (the reply's µ-law), `mark` after each half second of it, and
`clear` when the caller speaks over a reply (Twilio drops what it has not played yet).

A reply is sent at the pace the caller hears it (at most LEAD_S ahead of the marks echoed), so
that it is still under way, and can be cut, while it plays. The call runs the same realtime
session as the other transports (VAD, turns ended by meaning, pre-emptive replies, barge-in,
server-side tools) and is stored as a conversation named by its CallSid (or by the TwiML's
`conversation_id` parameter, to continue one); the marks Twilio echoes say how much of a reply the
caller heard, and a cut reply is stored as far as that. Twilio's messages carry no reply channel
for errors: a message we cannot use is logged and skipped, and the call goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from xml.etree import ElementTree

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect

from backend.app.api.protocols.websocket import Limit, Receiver, Sender
from backend.app.api.protocols.wire_audio import PCMU, WireDecoder, WireEncoder
from backend.app.audio.types import Audio
from backend.app.audio.vad import SAMPLE_RATE
from backend.app.container import Services
from backend.app.core.auth import KEY_CHECK_STATE, KeyCheck, supplied_keys
from backend.app.core.config import Settings
from backend.app.core.errors import AppError, ClientGone
from backend.app.core.quotas import Account, current_account
from backend.app.core.values import TranscribeOptions, Transcription
from backend.app.services.history import check_conversation_id
from backend.app.services.realtime.config import ReplyOptions, SessionConfig
from backend.app.services.realtime.listener import CutReason
from backend.app.services.realtime.session import RealtimeSession
from backend.app.services.speech import ReplyAudio
from backend.app.services.turn_events import Turn

logger = logging.getLogger(__name__)

router = APIRouter(tags=["phone"])

STREAM_PATH = "/phone/twilio"

MEDIA_S = 0.1
"""Reply audio goes out in `media` messages of this much audio."""

MARK_EVERY_S = 0.5
"""A `mark` follows each this much of a reply's audio: the caller heard a reply up to the last
mark Twilio echoed."""

LEAD_S = 1.0
"""How far a reply's audio may run ahead of what Twilio has played (by its marks): the reply is
sent at the pace it is heard, so it is still under way, and can be cut, while the caller hears it."""

GRACE_S = 2.0
"""A stream that does not echo marks is trusted to play in real time, this much late at most."""

START_TIMEOUT_S = 10.0
"""A stream that has not sent `start` this long after it opened is closed."""

MAX_MESSAGE_BYTES = 65_536
"""A Twilio message is a few hundred bytes; a larger one is not Twilio's and is skipped."""

Send = Callable[[dict[str, Any]], Awaitable[None]]


class TwilioCall:
    """One call's stream: Twilio's messages in, the session's happenings out (its `Listener`)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.stream_sid = ""
        self.call_sid = ""
        self.session: RealtimeSession | None = None
        self._decoder = WireDecoder(PCMU, SAMPLE_RATE)
        self._encoder = WireEncoder(PCMU)
        self._reply = 0
        self._sent_s = 0.0
        self._marked_s = 0.0
        self._audio_at = 0.0
        self._progress = asyncio.Event()
        self.played_s = 0.0
        """How much of the current reply Twilio says it played (its last echoed mark)."""
        self.turns = 0
        self.skipped = 0
        """Messages that could not be used (malformed, unknown), logged and skipped."""

    # --- Twilio's messages ------------------------------------------------------------------------

    async def message(self, text: str) -> bool:
        """One message from Twilio; False once the stream has stopped."""
        try:
            message = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return self._skip("a message that is not JSON")
        if not isinstance(message, dict):
            return self._skip("a message that is not a JSON object")
        kind = message.get("event")
        if kind == "media":
            await self._media(message.get("media"))
        elif kind == "mark":
            self._mark(message.get("mark"))
        elif kind == "stop":
            return False
        elif kind in ("connected", "start", "dtmf"):
            pass  # `start` is read before the session opens; a repeat, or a key press, changes nothing
        else:
            self._skip(f"an unknown event {str(kind)[:40]!r}")
        return True

    async def _media(self, media: Any) -> None:
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            self._skip("a media message without a payload")
            return
        if media.get("track", "inbound") not in ("inbound", "inbound_track"):
            return  # the bot's own audio, when a stream is asked for both tracks
        try:
            data = base64.b64decode(media["payload"], validate=True)
        except (ValueError, binascii.Error):
            self._skip("a media payload that is not base64")
            return
        if self.session is not None and data:
            await self.session.feed(self._decoder.decode(data))

    def _mark(self, mark: Any) -> None:
        name = mark.get("name") if isinstance(mark, dict) else None
        reply, _, ms = str(name or "").partition(":")
        if reply != str(self._reply) or not (ms.isascii() and ms.isdigit()):
            return  # a mark of an earlier reply (cleared), or not ours
        self.played_s = max(self.played_s, int(ms) / 1000)
        self._progress.set()
        if self.session is not None:
            self.session.limit_heard(self.played_s)

    def _skip(self, what: str) -> bool:
        self.skipped += 1
        if self.skipped <= 5:
            logger.warning("phone stream %s: skipped %s", self.stream_sid or "(not started)", what)
        return True

    # --- the session's happenings (Listener) ------------------------------------------------------

    async def speech_started(self, at_s: float) -> None:
        if self.session is not None and not self.session.replying and self._sent_s > self.played_s:
            # The caller speaks over the tail of a reply already sent whole: stop playing it.
            await self.event("clear")
            self._reply += 1

    async def speech_stopped(self, utterance: Audio, at_s: float, committed: bool) -> None:
        pass

    async def partial_transcript(self, text: str) -> None:
        pass

    async def transcribed(self, transcription: Transcription, stt_ms: float) -> None:
        logger.info("phone stream %s: heard %r (%.0f ms)", self.stream_sid, transcription.text[:80], stt_ms)

    async def transcription_failed(self, error: AppError) -> None:
        logger.warning("phone stream %s: not transcribed: %s", self.stream_sid, error.message)

    async def user_text(self, text: str) -> None:
        pass

    async def reply_started(self) -> None:
        self._reply += 1
        self._sent_s = self._marked_s = self.played_s = 0.0
        self._audio_at = 0.0
        self._encoder = WireEncoder(PCMU)

    async def reply_text(self, delta: str) -> None:
        pass

    async def reply_audio(self, piece: ReplyAudio, first: bool) -> None:
        await self._play(self._encoder.encode(piece.audio.samples, piece.audio.sample_rate))

    async def reply_finished(self, turn: Turn) -> None:
        if turn.reply:
            await self._play(self._encoder.flush(), last=True)
            self.turns += 1

    async def reply_cut(self, said: str, reason: CutReason) -> None:
        await self.event("clear")  # Twilio drops what it has not played yet
        self._reply += 1  # the cut reply's marks, still echoed, no longer count

    async def reply_failed(self, error: AppError) -> None:
        logger.warning("phone stream %s: no reply: %s", self.stream_sid, error.message)

    async def _play(self, data: bytes, last: bool = False) -> None:
        step = int(PCMU.rate * MEDIA_S)
        for offset in range(0, len(data), step):
            chunk = data[offset : offset + step]
            await self._wait_for_playback()
            await self.event("media", media={"payload": base64.b64encode(chunk).decode()})
            self._sent_s += PCMU.seconds(len(chunk))
            if self._sent_s - self._marked_s >= MARK_EVERY_S:
                await self._send_mark()
        if last and self._sent_s > self._marked_s:
            await self._send_mark()

    async def _wait_for_playback(self) -> None:
        """Until Twilio has played all but LEAD_S of what was sent (or, when it echoes no marks,
        until it should have)."""
        if not self._audio_at:
            self._audio_at = time.monotonic()
        while self._sent_s - self.played_s > LEAD_S:
            if time.monotonic() - self._audio_at > self._sent_s - LEAD_S + GRACE_S:
                return  # no marks come back: trust the clock
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), 0.1)

    async def _send_mark(self) -> None:
        self._marked_s = self._sent_s
        await self.event("mark", mark={"name": f"{self._reply}:{round(self._sent_s * 1000)}"})

    async def event(self, kind: str, **fields: Any) -> None:
        await self._send({"event": kind, "streamSid": self.stream_sid, **fields})


async def _start(receiver: Receiver) -> dict[str, Any] | None:
    """Twilio's `start` message (after `connected`), or None when the stream ends first."""
    while True:
        message = await receiver.next(lambda: False)
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if not text or len(text) > MAX_MESSAGE_BYTES:
            continue
        try:
            event = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(event, dict) and event.get("event") == "start" and isinstance(event.get("start"), dict):
            return event
        if isinstance(event, dict) and event.get("event") == "stop":
            return None


def _admit(websocket: WebSocket, parameters: dict[str, Any]) -> Account | str | None:
    """The key of the call (the TwiML's `api_key` parameter) when keys are configured: its
    account, or why it is refused."""
    check = websocket.scope.get("state", {}).get(KEY_CHECK_STATE)
    if not isinstance(check, KeyCheck):
        return None  # no keys configured, or the key came with the handshake
    admitted = check.admit(str(parameters.get("api_key") or ""))
    return admitted if isinstance(admitted, Account) else admitted.message


@router.websocket(STREAM_PATH)
async def twilio_stream(websocket: WebSocket) -> None:
    """Twilio Media Streams (bidirectional): a phone call as a realtime session."""
    await websocket.accept()
    settings: Settings = websocket.app.state.settings
    try:
        services: Services = websocket.app.state.gate.require()
    except AppError as e:
        await websocket.close(1013, reason=e.message[:120])
        return
    sender = Sender(websocket)

    async def send(event: dict[str, Any]) -> None:
        await sender.text(json.dumps(event))

    limits = settings.realtime
    receiver = Receiver(websocket, sender, limits.idle_timeout_s, limits.max_session_s)
    try:
        async with asyncio.timeout(START_TIMEOUT_S):  # Twilio sends it at once; no key is checked before it
            start = await _start(receiver)
    except (TimeoutError, Limit, WebSocketDisconnect, ClientGone):
        start = None
    if start is None:
        await _close(websocket, 1000, "no start message")
        return
    details = start["start"]
    parameters = details.get("customParameters") if isinstance(details.get("customParameters"), dict) else {}
    admitted = _admit(websocket, parameters)
    if isinstance(admitted, str):
        logger.warning("phone stream refused: %s", admitted)
        await _close(websocket, 1008, admitted)
        return
    token = current_account.set(admitted) if admitted is not None else None
    try:
        await _call(websocket, services, settings, send, receiver, start, parameters)
    finally:
        if token is not None:
            current_account.reset(token)
        if admitted is not None:
            admitted.end_session()


async def _call(
    websocket: WebSocket,
    services: Services,
    settings: Settings,
    send: Send,
    receiver: Receiver,
    start: dict[str, Any],
    parameters: dict[str, Any],
) -> None:
    details = start["start"]
    media_format = details.get("mediaFormat") if isinstance(details.get("mediaFormat"), dict) else {}
    encoding, rate = media_format.get("encoding", "audio/x-mulaw"), media_format.get("sampleRate", 8000)
    if encoding != "audio/x-mulaw" or rate != 8000:
        await _close(websocket, 1003, f"media format {encoding} at {rate} Hz: only audio/x-mulaw at 8000 Hz")
        return
    try:  # the call's conversation is stored under its CallSid unless the TwiML names one
        named = parameters.get("conversation_id") or details.get("callSid")
        conversation_id = check_conversation_id(str(named or "") or None)
    except AppError as e:
        await _close(websocket, 1008, e.message)
        return
    call = TwilioCall(send)
    call.stream_sid = str(start.get("streamSid") or details.get("streamSid") or "")
    call.call_sid = str(details.get("callSid") or "")
    realtime = services.realtime
    try:
        async with realtime.session(call, conversation_id) as session:
            session.configure(
                SessionConfig(
                    vad=realtime.turn_detection,
                    options=TranscribeOptions(
                        language=str(parameters.get("language") or "") or None,
                        beam_size=settings.realtime.stt_beam_size,
                    ),
                    reply=ReplyOptions(),
                )
            )
            call.session = session
            logger.info("phone call %s: stream %s started", call.call_sid, call.stream_sid)
            while True:
                message = await receiver.next(lambda: session.busy)
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None or len(text) > MAX_MESSAGE_BYTES:
                    call._skip("a binary or oversize message")
                    continue
                if not await call.message(text):
                    break  # `stop`: the call is over
            logger.info("phone call %s: ended after %d replies", call.call_sid, call.turns)
    except AppError as e:  # too many sessions
        await _close(websocket, 1013, e.message)
        return
    except (Limit, WebSocketDisconnect, ClientGone):
        pass
    await _close(websocket, 1000, "")


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code, reason=reason[:120])


@router.get("/phone/twilio/twiml", response_class=Response, operation_id="twilio_twiml_get")
@router.post("/phone/twilio/twiml", response_class=Response, operation_id="twilio_twiml_post")
async def twilio_twiml(request: Request) -> Response:
    """The TwiML for a phone number's voice webhook: it connects the call to /phone/twilio as a
    bidirectional media stream (with the webhook's API key as the stream's `api_key` parameter
    when keys are configured)."""
    settings: Settings = request.app.state.settings
    url = settings.realtime.phone_stream_url
    if not url:
        # Twilio only connects to wss://; plain ws:// only for a server tried on this machine.
        local = (request.url.hostname or "") in ("localhost", "127.0.0.1", "::1")
        secure = request.url.scheme == "https" or not local
        base = request.url.replace(path=STREAM_PATH, query="", fragment="")
        url = str(base.replace(scheme="wss" if secure else "ws"))
    root = ElementTree.Element("Response")
    stream = ElementTree.SubElement(ElementTree.SubElement(root, "Connect"), "Stream", url=url)
    keys = supplied_keys(request.scope) if getattr(request.state, "key_name", None) else []
    if keys:
        ElementTree.SubElement(stream, "Parameter", name="api_key", value=keys[0].decode(errors="replace"))
    body = ElementTree.tostring(root, encoding="unicode", xml_declaration=True)
    return Response(body, media_type="application/xml")
