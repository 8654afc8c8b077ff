"""The server half of OpenAI's Realtime protocol: what a `RealtimeSession` reports (`ServerEvents`
is the session's `Listener`), sent as OpenAI's server events, with OpenAI's ids (`item_...`,
`resp_...`), error shape and order. It also holds the connection's state (OpenAI's session
object, the items and the response under way), which the client half (session.py) updates."""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal

from backend.app.api.protocols.openai_realtime.schema import (
    AUDIO_DELTA_S,
    ResponseState,
    Send,
    check_output_format,
    checked_max_tokens,
    initial_state,
    message_item,
    new_id,
    speaks,
    voice_name,
)
from backend.app.api.protocols.openai_realtime.tools import call_item, session_tools
from backend.app.api.protocols.wire_audio import WireFormat
from backend.app.api.v1.compat import VoiceMap
from backend.app.audio.types import Audio
from backend.app.core.config import RealtimeSettings, VADSettings
from backend.app.core.errors import AppError
from backend.app.core.values import ToolCall, Transcription
from backend.app.services.realtime.config import ReplyOptions, SessionError
from backend.app.services.realtime.listener import CutReason
from backend.app.services.realtime.session import RealtimeSession
from backend.app.services.speech import ReplyAudio
from backend.app.services.turn_events import Turn, heard_reply

MAX_OPEN_CALLS = 64
"""Calls awaiting their output that a connection remembers (the oldest are forgotten)."""


class ServerEvents:
    """One /v1/realtime connection's state and server events."""

    def __init__(
        self,
        send: Send,
        settings: RealtimeSettings,
        vad: VADSettings,
        voices: VoiceMap,
        model: str,
        transcription_only: bool = False,
        mcp_servers: Mapping[str, str | None] | None = None,
    ) -> None:
        self._send = send
        self.mcp_servers: Mapping[str, str | None] = mcp_servers or {}
        self.calls: dict[str, ToolCall] = {}
        """Calls of the client's tools made and not yet answered (`function_call_output`)."""
        self.settings = settings
        self.vad_defaults = vad
        self.voices = voices
        self.session: RealtimeSession | None = None
        self.state: dict[str, Any] = initial_state(model, transcription_only, vad)
        self._last_item: str | None = None
        self.speech_item: str | None = None  # the user item the VAD's speech will become
        self._awaiting: deque[str] = deque()  # committed audio items, awaiting their transcripts
        self.response: ResponseState | None = None
        self.last_spoken: tuple[str, list[ReplyAudio]] | None = None
        """The last reply spoken whole: its item id and audio, for a truncation after it."""
        self.pending_text: deque[str] = deque()  # ids of typed items being stored
        self._durations: dict[str, float] = {}  # committed items' seconds of audio
        self.metadata: dict[str, str] | None = None  # for the next response
        self._kept_instructions: str | None = None  # the instructions stored with the conversation
        self.model = model

    async def error(
        self,
        message: str,
        code: str | None,
        param: str | None = None,
        client_event_id: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        await self.event(
            "error",
            error={
                "type": kind,
                "code": code,
                "message": message,
                "param": param,
                "event_id": client_event_id,
            },
        )

    def reply_options(self) -> ReplyOptions:
        state = self.state
        if state["type"] != "realtime":
            return ReplyOptions()
        voice = voice_name(state["audio"]["output"].get("voice"))
        return ReplyOptions(
            voice=self.resolve_voice(voice, "session.audio.output.voice") if voice else None,
            speak=speaks(state.get("output_modalities")),
            instructions=state.get("instructions") or None,
            max_tokens=checked_max_tokens(state.get("max_output_tokens"), "session.max_output_tokens"),
            tools=session_tools(state.get("tools"), state.get("tool_choice"), "session", self.mcp_servers),
        )

    @property
    def output_format(self) -> WireFormat:
        """The session's reply audio format (PCM16 at 24 kHz unless set)."""
        output = self.state["audio"].get("output") or {}
        return check_output_format(output.get("format"), "session.audio.output.format")

    def resolve_voice(self, voice: str, param: str) -> str | None:
        try:
            return self.voices.resolve(voice)
        except AppError as e:
            raise SessionError(e.message, "invalid_value", param) from None

    # --- the session's events (Listener) ----------------------------------------------------------

    async def speech_started(self, at_s: float) -> None:
        self.speech_item = new_id("item")
        await self.event(
            "input_audio_buffer.speech_started", audio_start_ms=round(at_s * 1000), item_id=self.speech_item
        )

    async def speech_stopped(self, utterance: Audio, at_s: float, committed: bool) -> None:
        item_id = self.speech_item or new_id("item")
        self.speech_item = None
        if not committed:
            await self.event(
                "input_audio_buffer.speech_stopped", audio_end_ms=round(at_s * 1000), item_id=item_id
            )
        await self.event("input_audio_buffer.committed", item_id=item_id, previous_item_id=self._last_item)
        await self.added(
            message_item(item_id, "user", "completed", [{"type": "input_audio", "transcript": None}])
        )
        self._awaiting.append(item_id)
        self._durations[item_id] = utterance.duration

    async def partial_transcript(self, text: str) -> None:
        pass  # OpenAI's transcription deltas belong to a committed item; they come with the transcript

    async def transcribed(self, transcription: Transcription, stt_ms: float) -> None:
        if not self._awaiting:
            return
        item_id = self._awaiting.popleft()
        seconds = self._durations.pop(item_id, transcription.duration)
        if self._transcribes:
            common = {"item_id": item_id, "content_index": 0}
            if transcription.text:
                await self.event(
                    "conversation.item.input_audio_transcription.delta", **common, delta=transcription.text
                )
            await self.event(
                "conversation.item.input_audio_transcription.completed",
                **common,
                transcript=transcription.text,
                usage={"type": "duration", "seconds": round(seconds, 3)},
            )

    async def transcription_failed(self, error: AppError) -> None:
        if not self._awaiting:
            await self.error(error.message, error.code, kind="server_error")
            return
        item_id = self._awaiting.popleft()
        self._durations.pop(item_id, None)
        await self.event(
            "conversation.item.input_audio_transcription.failed",
            item_id=item_id,
            content_index=0,
            error={
                "type": "transcription_error",
                "code": error.code,
                "message": error.message,
                "param": None,
            },
        )

    async def user_text(self, text: str) -> None:
        item_id = self.pending_text.popleft() if self.pending_text else new_id("item")
        await self.keep_instructions()
        await self.added(message_item(item_id, "user", "completed", [{"type": "input_text", "text": text}]))

    async def keep_instructions(self) -> None:
        """The session's instructions become the stored conversation's system prompt (once it
        exists: its first item makes it), so that the conversation, continued later over any
        route, is answered as it was here."""
        instructions = self.state.get("instructions") or None
        if self.session is None or not instructions or instructions == self._kept_instructions:
            return
        try:
            await self.session.keep_instructions(instructions)
        except AppError:
            return  # not stored yet (no item), or the store is down: kept at the next item
        self._kept_instructions = instructions

    async def reply_started(self) -> None:
        self.last_spoken = None  # from now on that reply is no longer the last one stored
        options = self.reply_options()
        response = ResponseState(
            new_id("resp"), new_id("item"), options.speak, self.metadata, self.output_format
        )
        self.metadata = None
        self.response = response
        await self.event("response.created", response=self._response_view(response, "in_progress", []))
        item = response.item("in_progress", [])
        await self.event("response.output_item.added", response_id=response.id, output_index=0, item=item)
        await self.event("conversation.item.added", item=item, previous_item_id=self._last_item)
        self._last_item = response.item_id
        await self.event("response.content_part.added", **response.where(), part=response.part(""))

    async def reply_text(self, delta: str) -> None:
        response = self.response
        if response is None or not delta:
            return
        response.text.append(delta)
        kind = "response.output_audio_transcript.delta" if response.speak else "response.output_text.delta"
        await self.event(kind, **response.where(), delta=delta)

    async def reply_audio(self, piece: ReplyAudio, first: bool) -> None:
        response = self.response
        if response is None:
            return
        words = response.keep(piece)
        data = response.encoder.encode(piece.audio.samples, piece.audio.sample_rate)
        await self.send_audio(response, data, words)

    async def reply_finished(self, turn: Turn) -> None:
        await self.keep_instructions()
        response = self.response
        if response is None:
            return  # nothing was said, so nothing was answered
        usage = None
        if turn.usage is not None:
            total = turn.usage.input_tokens + turn.usage.output_tokens
            usage = {
                "total_tokens": total,
                "input_tokens": turn.usage.input_tokens,
                "output_tokens": turn.usage.output_tokens,
                "input_token_details": {
                    "text_tokens": turn.usage.input_tokens,
                    "audio_tokens": 0,
                    "cached_tokens": 0,
                },
                "output_token_details": {"text_tokens": turn.usage.output_tokens, "audio_tokens": 0},
            }
        await self._finish(response, turn.reply, "completed", None, usage, turn.tool_calls)

    async def reply_cut(self, said: str, reason: CutReason) -> None:
        response = self.response
        if response is None:
            # Cut before it was answered (new speech during the transcription): that turn is dropped.
            if self._awaiting:
                await self.transcription_failed(
                    AppError("new speech started before this turn was answered; it was dropped")
                )
            return
        await self._finish(response, said, "cancelled", {"type": "cancelled", "reason": reason}, None)

    async def reply_failed(self, error: AppError) -> None:
        response = self.response
        if response is None:
            await self.error(
                error.message,
                error.code,
                kind="server_error" if error.status_code >= 500 else "invalid_request_error",
            )
            return
        kind = "server_error" if error.status_code >= 500 else "invalid_request_error"
        await self.error(error.message, error.code, kind=kind)
        details = {"type": "failed", "error": {"type": kind, "code": error.code, "message": error.message}}
        await self._finish(response, "".join(response.text), "failed", details, None)

    # --- helpers ----------------------------------------------------------------------------------

    @property
    def _transcribes(self) -> bool:
        return self.state["audio"]["input"].get("transcription") is not None

    async def added(self, item: dict[str, Any]) -> None:
        await self.event("conversation.item.added", item=item, previous_item_id=self._last_item)
        await self.event("conversation.item.done", item=item, previous_item_id=self._last_item)
        self._last_item = item["id"]

    async def clear_output(self) -> bool:
        """`output_audio_buffer.clear`: a transport that plays the audio itself (WebRTC) stops it;
        False here, where the client plays what it was sent."""
        return False

    async def send_audio(
        self, response: ResponseState, data: bytes, words: list[dict[str, object]] | None = None
    ) -> None:
        """Reply audio in the response's format, to the client: `response.output_audio.delta`s.
        The first delta of a piece carries the piece's `words` (seconds from the item's start)."""
        fmt = response.encoder.format
        step = int(fmt.rate * AUDIO_DELTA_S) * fmt.sample_bytes
        for offset in range(0, len(data), step):
            chunk = data[offset : offset + step]
            response.audio_s += fmt.seconds(len(chunk))
            extra = {"words": words} if words is not None and offset == 0 else {}
            delta = base64.b64encode(chunk).decode()
            await self.event("response.output_audio.delta", **response.where(), delta=delta, **extra)

    async def _finish(
        self,
        response: ResponseState,
        text: str,
        status: Literal["completed", "cancelled", "failed"],
        details: dict[str, Any] | None,
        usage: dict[str, Any] | None,
        calls: tuple[ToolCall, ...] = (),
    ) -> None:
        self.response = None
        stored = response.speak and response.spoken and status != "failed" and not calls
        self.last_spoken = (response.item_id, response.spoken) if stored else None
        if status == "completed":
            tail = response.encoder.flush()
            if tail:
                await self.send_audio(response, tail)
            limit = response.heard_limit_s  # truncated while in progress, then finished whole
            if stored and limit is not None and limit < sum(p.audio.duration for p in response.spoken):
                assert self.session is not None
                await self.session.turns.cut_stored_reply(heard_reply(response.spoken, limit).text)
        where = response.where()
        if response.speak:
            await self.event("response.output_audio.done", **where)
            await self.event("response.output_audio_transcript.done", **where, transcript=text)
        else:
            await self.event("response.output_text.done", **where, text=text)
        await self.event("response.content_part.done", **where, part=response.part(text))
        item = response.item("completed" if status == "completed" else "incomplete", [response.content(text)])
        await self.event("response.output_item.done", response_id=response.id, output_index=0, item=item)
        await self.event("conversation.item.done", item=item, previous_item_id=None)
        output = [item]
        for index, call in enumerate(calls, start=1):
            output.append(await self._function_call(response, index, call))
        view = self._response_view(response, status, output, details, usage)
        await self.event("response.done", response=view)

    async def _function_call(self, response: ResponseState, index: int, call: ToolCall) -> dict[str, Any]:
        """A call of the client's tool, as OpenAI streams one: the item, its arguments, done."""
        item_id = new_id("item")
        where = {"response_id": response.id, "output_index": index}
        added = call_item(call, item_id, "in_progress")
        await self.event("response.output_item.added", **where, item=added)
        await self.event("conversation.item.added", item=added, previous_item_id=self._last_item)
        self._last_item = item_id
        ids = {"item_id": item_id, "call_id": call.id}
        await self.event("response.function_call_arguments.delta", **where, **ids, delta=call.arguments)
        await self.event(
            "response.function_call_arguments.done", **where, **ids, name=call.name, arguments=call.arguments
        )
        done = call_item(call, item_id, "completed")
        await self.event("response.output_item.done", **where, item=done)
        await self.event("conversation.item.done", item=done, previous_item_id=None)
        self.calls[call.id] = call
        while len(self.calls) > MAX_OPEN_CALLS:
            self.calls.pop(next(iter(self.calls)))
        return done

    def _response_view(
        self,
        response: ResponseState,
        status: str,
        output: list[dict[str, Any]],
        details: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        assert self.session is not None
        options = self.reply_options()
        return {
            "id": response.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": self.session.conversation_id,
            "output_modalities": ["audio"] if response.speak else ["text"],
            "audio": {
                "output": {
                    "format": response.encoder.format.view(),
                    "voice": voice_name(self.state["audio"]["output"].get("voice")),
                }
            },
            "max_output_tokens": options.max_tokens or "inf",
            "metadata": response.metadata,
            "usage": usage,
        }

    async def event(self, kind: str, **fields: Any) -> None:
        await self._send({"type": kind, "event_id": new_id("event"), **fields})
