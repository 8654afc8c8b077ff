"""The hostile /v1/realtime client events the fuzz stage draws (test_fuzz_openai_realtime.py): each
a `Sent`, the event and the error that must answer it. Invalid base64, audio of the wrong type,
events over WS_MAX_EVENT_BYTES, 5,001-digit integers, JSON nested 1,200-5,000 deep, lone surrogates,
text that is not JSON, unknown event types and unknown ids, binary frames, wrong session, item and
response fields, an empty commit, and valid events between them."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from typing import Any

from tests.fuzz.hostile import BIG, huge, nested, pcm
from tests.fuzz.live import WS_MAX_EVENT_BYTES

ANY = ("",)


@dataclasses.dataclass
class Sent:
    """One client event of a /v1/realtime mix, and the answer it must get."""

    kind: str
    message: str | bytes
    codes: tuple[str, ...] | None
    """Error codes one of which must answer it (None: a valid event, no error but `overloaded`)."""
    event_id: str | None = None
    """The client's event_id, when the error can name it (the event was read as JSON)."""
    clears: bool = False


def user_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    if item_id:
        item["id"] = item_id
    return item


OPENAI_CLASSES = {  # the classes of /v1/realtime events, and how often each is drawn
    "invalid_base64": 3,
    "audio_type": 1,
    "oversized": 2,
    "huge_number": 3,
    "nested": 2,
    "surrogate": 2,
    "not_json": 2,
    "unknown_type": 2,
    "unknown_id": 3,
    "binary": 2,
    "bad_session": 2,
    "bad_item": 2,
    "bad_response": 2,
    "commit_empty": 1,
    "valid": 3,
}


def openai_event(rng: random.Random, index: int, kind: str | None = None) -> Sent:
    """One event of a class drawn from the hostile ones (and a few valid ones)."""
    eid = f"evt_fuzz_{index}"
    kind = kind or rng.choices(list(OPENAI_CLASSES), list(OPENAI_CLASSES.values()))[0]

    def event(kind_: str, **fields: Any) -> str:
        return json.dumps({"type": kind_, "event_id": eid, **fields})

    if kind == "invalid_base64":
        audio = rng.choice(
            [
                "!!!!",
                "abc",
                "a===",
                "YWJj\n",
                "\uff21\uff22\uff23\uff24",
                "%%%%",
                "AAA",
                base64.b64encode(b"abc").decode(),
            ]
        )
        return Sent(kind, event("input_audio_buffer.append", audio=audio), ("invalid_value",), eid)
    if kind == "audio_type":
        wrong: list[Any] = [5, None, [], {}, True]
        audio = rng.choice(wrong)
        return Sent(
            kind, event("input_audio_buffer.append", audio=audio), ("missing_required_parameter",), eid
        )
    if kind == "oversized":
        size = rng.randint(WS_MAX_EVENT_BYTES + 1, 3 * WS_MAX_EVENT_BYTES)
        message = rng.choice(
            [
                event("input_audio_buffer.append", audio=base64.b64encode(bytes(size * 3 // 4)).decode()),
                event("conversation.item.create", item=user_item("x" * size)),
            ]
        )
        return Sent(kind, message, ("event_too_large",))
    if kind == "huge_number":
        event_id: Any = BIG if rng.random() < 0.25 else eid
        bodies: list[dict[str, Any]] = [
            {"type": "session.update", "session": {"max_output_tokens": BIG}},
            {"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": BIG},
            {"type": "response.create", "response": {"max_output_tokens": BIG}},
            {"type": "input_audio_buffer.append", "audio": "AAAA", "n": BIG},
        ]
        return Sent(kind, huge(rng.choice(bodies) | {"event_id": event_id}), ("invalid_json",))
    if kind == "nested":
        message = rng.choice(
            ['{"type": "session.update", "session": ', '{"type": "response.create", "x": ', ""]
        )
        value = nested(rng)
        return Sent(kind, message + value + ("}" if message else ""), ("invalid_json",))
    if kind == "surrogate":
        text = rng.choice(["\ud800", "a\udfffb", "Hello \ud83d"])
        message = rng.choice(
            [
                event("conversation.item.create", item=user_item(text)),
                event("session.update", session={"instructions": text}),
                event("response.create", response={"instructions": text}),
            ]
        )
        return Sent(kind, message, ("invalid_json",))
    if kind == "not_json":
        return Sent(
            kind,
            rng.choice(["hello", "{", "[1]", "null", "", '"response.create"', "1e999"]),
            ("invalid_json",),
        )
    if kind == "unknown_type":
        choice = rng.choice(
            [
                ("response.make", "invalid_value"),
                (5, "missing_required_parameter"),
                (None, "missing_required_parameter"),
            ]
        )
        body = {"event_id": eid} if choice[0] is None else {"type": choice[0], "event_id": eid}
        return Sent(kind, json.dumps(body), (choice[1],), eid)
    if kind == "unknown_id":
        message, code = rng.choice(
            [
                (event("response.cancel", response_id="resp_nope"), "response_cancel_not_active"),
                (event("response.cancel"), "response_cancel_not_active"),
                (
                    event(
                        "conversation.item.truncate", item_id="item_nope", content_index=0, audio_end_ms=10
                    ),
                    "item_truncate_invalid_item_id",
                ),
                (event("conversation.item.delete", item_id="item_nope"), "unsupported"),
                (event("conversation.item.retrieve", item_id="item_nope"), "unsupported"),
            ]
        )
        return Sent(kind, message, (code,), eid)
    if kind == "binary":
        return Sent(kind, pcm(rng, 24000, rng.uniform(0.01, 0.2)), ("invalid_value",))
    if kind == "bad_session":
        session = rng.choice(
            [
                5,
                "realtime",
                {"type": "bogus"},
                {"output_modalities": "text"},
                {"output_modalities": ["video"]},
                {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 1}}}},
                {"audio": {"input": {"format": {"type": "audio/pcmu", "rate": 16000}}}},
                {"audio": {"output": {"format": {"type": "audio/g729"}}}},
                {"tools": [{"type": "function", "name": "f", "parameters": {"type": "array"}}]},
                {"tools": [{"type": "function", "name": "no spaces"}]},
                {
                    "tools": [
                        {"type": "mcp", "server_label": "elsewhere", "server_url": "http://10.0.0.1/mcp"}
                    ]
                },
                {"tools": [{"type": "function", "name": "f"}], "tool_choice": "g"},
                {"max_output_tokens": -5},
                {"max_output_tokens": 100_000},
                {"audio": {"output": {"voice": "no-such-voice"}}},
                {"audio": {"input": {"turn_detection": {"type": "nope"}}}},
                {"audio": {"output": {"speed": 2.0}}},
            ]
        )
        return Sent(kind, event("session.update", session=session), ANY, eid)
    if kind == "bad_item":
        item = rng.choice(
            [
                None,
                5,
                {"type": "function_call"},
                {"type": "function_call_output", "call_id": "call_nobody", "output": "x"},
                {"type": "function_call_output", "output": "x"},
                {"type": "message", "role": "assistant", "content": []},
                {"type": "message", "role": "user", "content": []},
                {"type": "message", "role": "user", "content": [{"type": "input_image"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "  "}]},
                {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "x"}]},
                {**user_item("Hi."), "id": "x" * 65},
            ]
        )
        return Sent(kind, event("conversation.item.create", item=item), ANY, eid)
    if kind == "bad_response":
        response = rng.choice(
            [
                5,
                {"conversation": "none"},
                {"input": []},
                {"tools": [{"type": "function"}]},
                {"max_output_tokens": 0},
                {"audio": {"output": {"voice": "no-such-voice"}}},
                {"output_modalities": ["video"]},
                {"output_modalities": []},
            ]
        )
        return Sent(kind, event("response.create", response=response), ANY, eid)
    if kind == "commit_empty":
        return Sent(kind, event("input_audio_buffer.commit"), ("input_audio_buffer_commit_empty",), eid)
    message, clears = rng.choice(
        [
            (
                event("input_audio_buffer.append", audio=base64.b64encode(pcm(rng, 24000, 0.1)).decode()),
                False,
            ),
            (event("input_audio_buffer.clear"), True),
            (event("session.update", session={"instructions": "Be brief."}), False),
            (event("session.update", session={"type": "realtime", "output_modalities": ["text"]}), False),
        ]
    )
    return Sent("valid", message, None, clears=clears)
