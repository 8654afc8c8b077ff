"""`conversation.item.truncate`: the client played only `audio_end_ms` of a reply.

The reply is stored up to the last word whose end was within the audio heard (its words' times
come with its audio, from the TTS engine). For the reply in progress the server limits what it
counts as heard and the reply is stored so when it is cut or ends; for the reply spoken last
(the server sends audio faster than real time, so a reply is often complete before the listener
has heard it all), the stored reply is rewritten at once. The model's next turn sees exactly the
words heard.
"""

from __future__ import annotations

from typing import Any

from backend.app.api.protocols.openai_realtime.events import ServerEvents
from backend.app.services.realtime.config import SessionError
from backend.app.services.turn_events import heard_reply


async def truncate(server: ServerEvents, event: dict[str, Any]) -> None:
    item_id, end_ms = event.get("item_id"), event.get("audio_end_ms")
    if not isinstance(item_id, str):
        raise SessionError("Missing required parameter: 'item_id'.", "missing_required_parameter", "item_id")
    if isinstance(end_ms, bool) or not isinstance(end_ms, int) or end_ms < 0:
        raise SessionError(
            "Invalid value for 'audio_end_ms': a whole number of milliseconds.",
            "invalid_value",
            "audio_end_ms",
        )
    session = server.session
    assert session is not None
    response = server.response
    if response is not None and response.item_id == item_id:
        _check_end(end_ms, response.audio_s)
        session.limit_heard(end_ms / 1000)  # counted if it is cut
        response.heard_limit_s = end_ms / 1000  # and applied if it ends whole
    elif server.last_spoken is not None and server.last_spoken[0] == item_id:
        spoken = server.last_spoken[1]
        length = sum(piece.audio.duration for piece in spoken)
        _check_end(end_ms, length)
        if end_ms / 1000 < length:  # all of it heard: nothing to change
            await session.turns.cut_stored_reply(heard_reply(spoken, end_ms / 1000).text)
    else:
        raise SessionError(
            f"Item {item_id!r} is neither the reply being spoken nor the last one spoken: only "
            "those can be truncated.",
            "item_truncate_invalid_item_id",
            "item_id",
        )
    await server.event("conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=end_ms)


def _check_end(end_ms: int, audio_s: float) -> None:
    if end_ms > round(audio_s * 1000):
        raise SessionError(
            f"audio_end_ms {end_ms} is beyond the {round(audio_s * 1000)} ms of audio sent.",
            "invalid_value",
            "audio_end_ms",
        )
