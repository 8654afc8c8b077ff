"""OpenAI's Realtime protocol (the GA events of the `openai` SDK's `types.realtime`) over our
realtime session: /v1/realtime.

The client's JSON events become calls on a `RealtimeSession` (services/realtime/); what the
session reports comes back as OpenAI's server events, with OpenAI's ids (`item_...`, `resp_...`),
error shape and order. Audio is base64 PCM16 at 24 kHz both ways unless the session says otherwise
(PCM16 at another input rate, or G.711 µ-law/A-law at 8 kHz for telephony; resampled inside: the
VAD and the STT take 16 kHz, the TTS engine has its own rate). A `session.update` that does not
name a format keeps the one in use; a response keeps the format it began in. What of OpenAI's
protocol is not supported (images, SIP...) is refused with an error event that says so;
docs/realtime.md lists it. Tools: the client's `function` tools, and `mcp` tools naming the
operator's MCP servers (tools.py).

A protocol mistake (unknown event, malformed field, bad base64) is answered with an `error` event
that names the client's `event_id` and the field; the connection goes on, as OpenAI's does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from backend.app.api.protocols.dispatch import Dispatch
from backend.app.api.protocols.openai_realtime.events import ServerEvents
from backend.app.api.protocols.openai_realtime.schema import (
    OUTPUT_RATE,
    ItemFields,
    ResponseFields,
    Send,
    SessionFields,
    check_input_format,
    check_output_format,
    checked_max_tokens,
    initial_state,
    merged,
    new_id,
    speaks,
    turn_settings,
    validation_problem,
    voice_name,
)
from backend.app.api.protocols.openai_realtime.tools import output_item, session_tools
from backend.app.api.protocols.openai_realtime.truncation import truncate
from backend.app.api.protocols.wire_audio import WireDecoder, WireFormat
from backend.app.api.v1.compat import VoiceMap
from backend.app.audio.vad import SAMPLE_RATE
from backend.app.core.config import RealtimeSettings, VADSettings
from backend.app.core.errors import AppError
from backend.app.core.values import TranscribeOptions
from backend.app.services.realtime.config import ReplyOptions, SessionConfig, SessionError
from backend.app.services.realtime.session import RealtimeSession

EVENTS: Dispatch[OpenAIRealtime, dict[str, Any]] = Dispatch()
"""The client events this server handles, by type."""


class OpenAIRealtime:
    """One /v1/realtime connection: `handle` each client event; `server` is the session's
    `Listener`, which sends OpenAI's server events and holds the connection's state."""

    def __init__(
        self,
        send: Send,
        settings: RealtimeSettings,
        vad: VADSettings,
        voices: VoiceMap,
        model: str,
        transcription_only: bool = False,
        mcp_servers: Mapping[str, str | None] | None = None,
        events: type[ServerEvents] = ServerEvents,
    ) -> None:
        self.server = events(send, settings, vad, voices, model, transcription_only, mcp_servers)
        self._decoder = WireDecoder(WireFormat("audio/pcm", OUTPUT_RATE), SAMPLE_RATE)

    @property
    def session(self) -> RealtimeSession | None:
        return self.server.session

    async def start(self, session: RealtimeSession) -> None:
        """The connection is accepted: apply the defaults and say so."""
        self.server.session = session
        self._apply()
        await self.server.event("session.created", session=self._session_view())
        await self.server.event(
            "conversation.created",
            conversation={"id": session.conversation_id, "object": "realtime.conversation"},
        )

    # --- client events ----------------------------------------------------------------------------

    async def handle(self, event: dict[str, Any]) -> None:
        """One client event; a mistake in it is answered with an `error` event."""
        client_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            kind = event.get("type")
            handler = EVENTS.find(kind)
            if handler is None:
                known = ", ".join(EVENTS.kinds)
                raise SessionError(
                    f"Invalid value for 'type': {kind!r} is not a client event this server handles "
                    f"({known}).",
                    "invalid_value" if isinstance(kind, str) else "missing_required_parameter",
                    "type",
                )
            await handler(self, event)
        except SessionError as e:
            await self.server.error(e.message, e.code, e.param, client_id)
        except AppError as e:
            await self.server.error(e.message, e.code, e.param, client_id)

    @EVENTS.on("session.update")
    async def _session_update(self, event: dict[str, Any]) -> None:
        try:
            update = SessionFields.model_validate(event.get("session") or {})
        except ValidationError as e:
            raise validation_problem(e, "session") from None
        base = self.server.state
        if update.type is not None and update.type != base["type"]:
            # A connection opened for conversation may become a transcription session, or back.
            base = {
                **initial_state(self.server.model, update.type == "transcription", self.server.vad_defaults),
                "id": base["id"],
            }
        state = merged(base, update.model_dump(exclude_unset=True, exclude={"id", "object"}))
        checked_max_tokens(state.get("max_output_tokens"), "session.max_output_tokens")
        previous, self.server.state = self.server.state, state
        try:
            self._apply()
        except (SessionError, AppError):
            self.server.state = previous
            raise
        await self.server.event("session.updated", session=self._session_view())
        await self.server.keep_instructions()

    @EVENTS.on("input_audio_buffer.append")
    async def _append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise SessionError(
                "Missing required parameter: 'audio' (base64 audio in the session's input format).",
                "missing_required_parameter",
                "audio",
            )
        try:
            data = base64.b64decode(audio, validate=True)
        except (ValueError, binascii.Error):
            raise SessionError(
                "Invalid value for 'audio': not valid base64.", "invalid_value", "audio"
            ) from None
        problem = self._decoder.problem(data)
        if problem is not None:
            raise SessionError(f"Invalid value for 'audio': {problem}.", "invalid_value", "audio")
        assert self.server.session is not None
        await self.server.session.feed(self._decoder.decode(data))

    @EVENTS.on("input_audio_buffer.commit")
    async def _commit(self, event: dict[str, Any]) -> None:
        assert self.server.session is not None
        await self.server.session.commit()

    @EVENTS.on("input_audio_buffer.clear")
    async def _clear(self, event: dict[str, Any]) -> None:
        assert self.server.session is not None
        self.server.session.clear()
        self.server.speech_item = None
        await self.server.event("input_audio_buffer.cleared")

    @EVENTS.on("conversation.item.create")
    async def _item_create(self, event: dict[str, Any]) -> None:
        try:
            item = ItemFields.model_validate(event.get("item"))
        except ValidationError as e:
            raise validation_problem(e, "item") from None
        if item.type == "function_call_output":
            await self._function_output(item)
            return
        if item.type != "message":
            raise SessionError(
                f"Items of type {item.type!r} are not supported; send a user message or a "
                "function_call_output.",
                "unsupported",
                "item.type",
            )
        if item.role != "user":
            raise SessionError(
                "Only user messages can be added; set the assistant's behaviour with session.instructions.",
                "unsupported",
                "item.role",
            )
        texts = []
        for index, part in enumerate(item.content or []):
            if part.type != "input_text" or part.text is None:
                what = "image input is" if part.type == "input_image" else f"{part.type!r} content is"
                raise SessionError(
                    f"{what} not supported; a user message carries input_text.",
                    "unsupported",
                    f"item.content[{index}].type",
                )
            texts.append(part.text)
        text = "\n".join(texts)
        if not text.strip():
            raise SessionError(
                "Missing required parameter: 'item.content' (input_text).",
                "missing_required_parameter",
                "item.content",
            )
        assert self.server.session is not None
        self.server.pending_text.append(item.id or new_id("item"))
        try:
            await self.server.session.add_text(text)
        except BaseException:
            self.server.pending_text.pop()
            raise

    async def _function_output(self, item: ItemFields) -> None:
        """The result of a call of the client's tool: stored, for the next response to use."""
        extra = item.model_extra or {}
        call_id, output = extra.get("call_id"), extra.get("output")
        if not isinstance(call_id, str) or not call_id:
            raise SessionError(
                "Missing required parameter: 'item.call_id'.", "missing_required_parameter", "item.call_id"
            )
        if not isinstance(output, str):
            raise SessionError(
                "Invalid value for 'item.output': the function's result, as a string.",
                "invalid_value",
                "item.output",
            )
        call = self.server.calls.get(call_id)
        if call is None:
            raise SessionError(
                f"Invalid value for 'item.call_id': {call_id[:64]!r} is no function call of this "
                "session awaiting its output.",
                "invalid_value",
                "item.call_id",
            )
        assert self.server.session is not None
        await self.server.session.add_tool_result(call, output)
        self.server.last_spoken = None  # the stored turns now end with this result
        del self.server.calls[call_id]
        await self.server.added(output_item(item.id or new_id("item"), call_id, output))

    @EVENTS.on("conversation.item.truncate")
    async def _truncate(self, event: dict[str, Any]) -> None:
        await truncate(self.server, event)

    @EVENTS.on("response.create")
    async def _response_create(self, event: dict[str, Any]) -> None:
        if self.server.state["type"] == "transcription":
            raise SessionError("A transcription session makes no responses.", "invalid_request", "type")
        try:
            asked = ResponseFields.model_validate(event.get("response") or {})
        except ValidationError as e:
            raise validation_problem(e, "response") from None
        if asked.input is not None or asked.conversation not in (None, "auto"):
            raise SessionError(
                "Out-of-band responses (response.conversation 'none', response.input) are not supported; "
                "responses use the conversation.",
                "unsupported",
                "response.conversation",
            )
        options = self.server.reply_options()
        voice = voice_name(asked.audio.output.voice) if asked.audio and asked.audio.output else None
        if asked.audio and asked.audio.output and asked.audio.output.format:
            param = "response.audio.output.format"
            if check_output_format(asked.audio.output.format, param) != self.server.output_format:
                raise SessionError(
                    f"Invalid value for '{param}': a response's audio is in the session's format "
                    f"({self.server.output_format.kind}); change it with session.update.",
                    "invalid_value",
                    param,
                )
        tools = options.tools
        if asked.tools is not None or asked.tool_choice is not None:
            tools = session_tools(
                asked.tools if asked.tools is not None else self.server.state.get("tools"),
                asked.tool_choice if asked.tool_choice is not None else self.server.state.get("tool_choice"),
                "response",
                self.server.mcp_servers,
            )
        options = ReplyOptions(
            tools=tools,
            voice=self.server.resolve_voice(voice, "response.audio.output.voice") if voice else options.voice,
            speak=speaks(asked.output_modalities) if asked.output_modalities else options.speak,
            instructions=asked.instructions or options.instructions,
            max_tokens=checked_max_tokens(asked.max_output_tokens, "response.max_output_tokens")
            if asked.max_output_tokens is not None
            else options.max_tokens,
        )
        assert self.server.session is not None
        self.server.metadata = asked.metadata
        await self.server.session.respond(options)

    @EVENTS.on("response.cancel")
    async def _response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        response = self.server.response
        if wanted is not None and (response is None or wanted != response.id):
            raise SessionError(
                f"No response {wanted!r} is in progress.", "response_cancel_not_active", "response_id"
            )
        assert self.server.session is not None
        if not await self.server.session.cancel():
            raise SessionError("There is no response in progress to cancel.", "response_cancel_not_active")

    @EVENTS.on("output_audio_buffer.clear")
    async def _clear_output(self, event: dict[str, Any]) -> None:
        if not await self.server.clear_output():
            await self._unsupported(event)

    @EVENTS.on("conversation.item.delete", "conversation.item.retrieve")
    async def _unsupported(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        why = {
            "output_audio_buffer.clear": "it is for WebRTC and SIP; over a WebSocket, stop playback yourself",
            "conversation.item.delete": "the conversation is stored as it happened "
            "(DELETE /conversations/{id} removes all of it)",
            "conversation.item.retrieve": "read the stored conversation with GET /conversations/{id}",
        }[kind]
        raise SessionError(f"{kind} is not supported: {why}.", "unsupported", "type")

    # --- configuration ----------------------------------------------------------------------------

    def _apply(self) -> None:
        """Turn the session state into the session's config (checks voices, languages, formats)."""
        assert self.server.session is not None
        state = self.server.state
        audio_in = state["audio"]["input"]
        input_format = check_input_format(audio_in.get("format"), "session.audio.input.format")
        if state["type"] == "realtime":
            check_output_format(state["audio"]["output"].get("format"), "session.audio.output.format")
            speed = state["audio"]["output"].get("speed")
            if speed not in (None, 1, 1.0):
                raise SessionError(
                    "Invalid value for 'session.audio.output.speed': only 1.0 is supported.",
                    "unsupported",
                    "session.audio.output.speed",
                )
        detection = audio_in.get("turn_detection")
        vad = turn_settings(detection, self.server.vad_defaults) if detection is not None else None
        transcription = audio_in.get("transcription") or {}
        language = transcription.get("language") or None
        realtime = state["type"] == "realtime"
        creates = bool(detection is not None and detection.get("create_response", True) is not False)
        self.server.session.configure(
            SessionConfig(
                vad=vad,
                respond=realtime and creates,
                interrupt=realtime
                and bool(detection is None or detection.get("interrupt_response", True) is not False),
                options=TranscribeOptions(language=language, beam_size=self.server.settings.stt_beam_size),
                reply=self.server.reply_options(),
                usage=True,
            )
        )
        if input_format != self._decoder.format:
            self._decoder = WireDecoder(input_format, SAMPLE_RATE)

    def _session_view(self) -> dict[str, Any]:
        assert self.server.session is not None
        view = dict(self.server.state)
        if view["type"] == "transcription":
            view = {k: v for k, v in view.items() if k in ("type", "id", "object", "audio", "include")}
            view["audio"] = {"input": view["audio"]["input"]}
        return view
