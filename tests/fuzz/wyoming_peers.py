"""The hostile Wyoming peers the fuzz stage draws (test_fuzz_wyoming.py), one function a class: each
draws a `Case` (what one connection writes, and what must answer it) from a seeded RNG. Header lines
nested 1,200-5,000 deep, headers without an end, lengths that lie or are huge, audio formats out of
range, audio at 1 kHz and 8 bits without an audio-stop, `transcribe` with transcript_names: 5, lone
surrogates, unknown and out-of-order events, idle, ping-only and slow peers, peers that vanish, and
valid requests between them."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from typing import Any

from tests.api.test_wyoming_abuse import header
from tests.fuzz.hostile import nested, pcm, speech_at
from tests.fuzz.live import CASE_BOUND_S, IDLE_S, WYOMING_MAX_EVENT_BYTES

ANY_ERROR = ("",)


@dataclasses.dataclass
class Case:
    """One connection: what it writes (bytes, or a pause in seconds), and what must answer it."""

    kind: str
    steps: list[bytes | float]
    error: tuple[str, ...] | None = None
    """Text one of the error events must hold (its message or code); None: no error wanted."""
    closes: bool | None = None
    """The server ends the connection (True), answers the sentinel ping (False), or either."""
    answer: tuple[str, ...] = ()
    """Event types, one of which must come (a valid request's answer)."""
    sentinel: bool = True
    """A `ping` follows the steps; its `pong` says that all before it was read."""
    events: int | None = None
    """Events the steps hold, when that is not one a write (an event trickled in pieces)."""
    within: float = CASE_BOUND_S
    """How long the answer may take (an idle connection's: IDLE_S and a margin)."""
    leaves: bool = False
    """The peer goes once it has written, waiting for nothing (nobody is left to answer)."""

    @property
    def requests(self) -> int:
        written = sum(isinstance(s, bytes) for s in self.steps) if self.events is None else self.events
        return written + self.sentinel


def raw(head: dict[str, Any], body: bytes = b"", payload: bytes = b"") -> bytes:
    """An event whose header says whatever `head` says (lengths included, true or not)."""
    return json.dumps(head).encode() + b"\n" + body + payload


def idle(case: Case) -> Case:
    """`case`, answered once the idle time is over: the connection closed with `idle_timeout`."""
    return dataclasses.replace(case, error=("idle_timeout",), closes=True, sentinel=False, within=IDLE_S + 8)


def digits(n: int) -> int:
    return int("9" * n)


# --- the classes: each draws one case ------------------------------------------------------------


def nested_header(rng: random.Random) -> Case:
    field = rng.choice(["data", "extra"]).encode()
    line = b'{"type": "ping", "' + field + b'": ' + nested(rng).encode() + b"}\n"
    return Case("nested_header", [line], error=("nested deeper",), closes=True)


def nested_data(rng: random.Random) -> Case:
    body = nested(rng).encode()
    kind = rng.choice(["ping", "transcript", "audio-start", "synthesize"])
    return Case(
        "nested_data", [raw({"type": kind, "data_length": len(body)}, body)], ("nested deeper",), True
    )


def unterminated_header(rng: random.Random) -> Case:
    whole = header("transcript", {"text": "Hello there."})
    cut = whole[: rng.randint(1, whole.index(b"\n"))] if rng.random() < 0.5 else whole.replace(b"\n", b"")
    return idle(Case("unterminated_header", [cut]))


def endless_header(rng: random.Random) -> Case:
    line = b'{"type": "ping", "pad": "' + b"x" * rng.randint(70_000, 300_000)
    return Case("endless_header", [line], error=("longer than",), closes=True, sentinel=False)


def lying_longer(rng: random.Random) -> Case:
    body = json.dumps({"text": "Hello there."}).encode()
    head = {"type": rng.choice(["transcript", "ping"]), "data_length": len(body) + rng.randint(1, 5_000)}
    case = Case("lying_longer", [raw(head, body)], ("declared more bytes",), True, sentinel=False)
    return dataclasses.replace(case, within=IDLE_S + 8)


def lying_shorter(rng: random.Random) -> Case:
    body = json.dumps({"text": "Hello there, a longer text."}).encode()
    head = {"type": "transcript", "data_length": rng.randint(1, len(body) - 1)}
    return Case("lying_shorter", [raw(head, body)], ANY_ERROR, True)


def huge_length(rng: random.Random) -> Case:
    key = rng.choice(["data_length", "payload_length"])
    value = rng.choice([WYOMING_MAX_EVENT_BYTES + 1, 2**31, 2**53 + 1, 2**63, 10**30, digits(99)])
    head: dict[str, Any] = {"type": rng.choice(["audio-chunk", "ping", "synthesize"]), key: value}
    if rng.random() < 0.3:  # each length within the limit, the two together over it
        half = WYOMING_MAX_EVENT_BYTES // 2
        head = {"type": "audio-chunk", "data_length": half + 1, "payload_length": half}
    return Case("huge_length", [raw(head)], error=("payload_too_large",), closes=True)


def digits_length(rng: random.Random) -> Case:
    key = rng.choice(["data_length", "payload_length"])
    line = b'{"type": "audio-chunk", "' + key.encode() + b'": ' + b"9" * 5_001 + b"}\n"
    return Case("digits_length", [line], error=("digits",), closes=True)


def bad_length(rng: random.Random) -> Case:
    value = rng.choice([-1, -(2**63), "12", 1.5, True, [1], {"n": 1}, float("inf")])
    head = {"type": "ping", rng.choice(["data_length", "payload_length"]): value}
    return Case("bad_length", [raw(head)], error=("non-negative integer",), closes=True)


BAD_FORMATS = {
    "rate": [0, -1, 1, 999, 384_001, 2**31, digits(99), 1.5, "16000", None, True, []],
    "width": [0, -2, 5, 8, 2**40, 2.0, "2", None, False],
    "channels": [0, -1, 33, 2**20, 1.0, "1", None, True],
}


def bad_format(rng: random.Random) -> dict[str, Any]:
    fmt: dict[str, Any] = {"rate": 16_000, "width": 2, "channels": 1}
    field = rng.choice(sorted(BAD_FORMATS))
    fmt[field] = rng.choice(BAD_FORMATS[field])
    if rng.random() < 0.2:
        del fmt[rng.choice(sorted(fmt))]
    return fmt


def audio_start_out_of_range(rng: random.Random) -> Case:
    return Case("audio_start_format", [header("audio-start", bad_format(rng))], ("audio", "malformed"))


def audio_chunk_out_of_range(rng: random.Random) -> Case:
    start = header("audio-start", {"rate": 16_000, "width": 2, "channels": 1})
    chunk = header("audio-chunk", bad_format(rng), bytes(rng.randint(1, 4_000)))
    return Case("audio_chunk_format", [start, chunk], error=("audio", "malformed"))


def long_audio_without_stop(rng: random.Random) -> Case:
    """1 kHz, 8 bits: a byte a millisecond, 64 bytes once held; longer than MAX_AUDIO_SECONDS."""
    fmt = {"rate": 1_000, "width": 1, "channels": 1}
    steps: list[bytes | float] = [header("audio-start", fmt)]
    left = rng.randint(61_000, 200_000)
    while left > 0:
        size = min(left, rng.randint(1_000, 20_000))
        steps.append(header("audio-chunk", fmt, bytes(size)))
        left -= size
    return Case("long_audio", steps, error=("longer than", "WYOMING_MAX_BUFFERED_MB"), closes=False)


def huge_chunk(rng: random.Random) -> Case:
    """One chunk of 1-4 MB at 1 kHz, 8 bits: 64-256 MB once held, far over the budget."""
    fmt = {"rate": 1_000, "width": 1, "channels": 1}
    chunk = header("audio-chunk", fmt, bytes(rng.randint(1_000_000, WYOMING_MAX_EVENT_BYTES - 100)))
    return Case("huge_chunk", [header("audio-start", fmt), chunk], ("WYOMING_MAX_BUFFERED_MB",), False)


def wrong_transcript_names(rng: random.Random) -> Case:
    field = rng.choice(["transcript_names", "transcript_names", "transcript_terms"])
    value = rng.choice([5, "names", {"a": 1}, [1, 2], [None], 5.5, True, ["ok", 3]])
    return Case("transcript_names", [header("transcribe", {field: value})], error=(field,), closes=True)


def lone_surrogate(rng: random.Random) -> Case:
    text = rng.choice(["\ud800", "a \udfff b", "\ud83d", "x\udc00y", "Hello \ud800 there."])
    kind, field = rng.choice(
        [
            ("transcript", "text"),
            ("handle", "text"),
            ("synthesize", "text"),
            ("ping", "text"),
            ("transcribe", "language"),
            ("synthesize-start", "context"),
        ]
    )
    data = {field: text}  # json.dumps writes the surrogate as a \ud800 escape: valid JSON
    if rng.random() < 0.5:
        line = json.dumps({"type": kind, "data": data}).encode() + b"\n"
    else:
        line = header(kind, data)
    return Case("lone_surrogate", [line], error=("not valid Unicode",), closes=True)


def huge_integer(rng: random.Random) -> Case:
    kind, field = rng.choice(
        [("ping", "n"), ("transcript", "n"), ("audio-start", "rate"), ("synthesize", "x")]
    )
    body = b'{"' + field.encode() + b'": ' + b"9" * 5_001 + b"}"
    return Case("huge_integer", [raw({"type": kind, "data_length": len(body)}, body)], ("digits",), True)


def unknown_type(rng: random.Random) -> Case:
    kind = rng.choice(["", "x" * 500, "Ping", "audio_chunk", "pong2", 123, None, ["ping"], {"a": 1}])
    return Case("unknown_type", [raw({"type": kind})], error=("type",), closes=True)


def unserved_type(rng: random.Random) -> Case:
    kind = rng.choice(["detect", "run-pipeline", "timer-started", "satellite-connected", "error", "pong"])
    return Case("unserved_type", [header(kind, {"text": "hi"})], error=None, closes=False)


def out_of_order(rng: random.Random) -> Case:
    steps: list[bytes | float] = rng.choice(
        [
            [header("audio-chunk", {"rate": 16_000, "width": 2, "channels": 1}, bytes(320))],
            [header("audio-stop")],
            [header("synthesize-chunk", {"text": "Hi."})],
            [header("synthesize-stop")],
            [header("synthesize-start"), header("synthesize-start")],
            [header("select-program", {"name": "nothing-here"})],
        ]
    )
    return Case("out_of_order", steps, error=ANY_ERROR, closes=True)


def not_json(rng: random.Random) -> Case:
    garbage = rng.randbytes(rng.randint(1, 400)).replace(b"\n", b" ")
    line = rng.choice([garbage, b"[1]", b"null", b'"ping"', b"{", b"\xff\xfe"])
    return Case("not_json", [line + b"\n"], error=ANY_ERROR, closes=True)


def slow_peer(rng: random.Random) -> Case:
    """A ping trickled in: whole well within the idle time (answered), or not (closed)."""
    line = header("ping", {"text": "slow"})
    pieces = [line[i : i + 8] for i in range(0, len(line), 8)]
    slow = rng.random() < 0.5
    pause = (IDLE_S + 1) / len(pieces) if slow else 0.3 / len(pieces)
    steps: list[bytes | float] = [step for piece in pieces for step in (piece, pause)]
    if slow:
        return idle(Case("slow_peer", steps, events=1))
    return Case("slow_peer", steps, None, False, answer=("pong",), events=1)


def idle_peer(rng: random.Random) -> Case:
    return idle(Case("idle_peer", []))


def ping_only_peer(rng: random.Random) -> Case:
    steps: list[bytes | float] = []
    for _ in range(int((IDLE_S + 1) / 0.3)):
        steps += [header("ping"), 0.3]
    return idle(Case("ping_only_peer", steps))


def idle_in_text_stream(rng: random.Random) -> Case:
    """A streamed synthesis opened, maybe a few words sent, then nothing: the server waits for the
    client's text, no request of the client's is under way, so the idle time runs as for any peer."""
    steps: list[bytes | float] = [header("synthesize-start")]
    if rng.random() < 0.5:
        steps.append(header("synthesize-chunk", {"text": rng.choice(["Hello", "Hello there.", "One, two"])}))
    return idle(Case("idle_in_text_stream", steps))


def streamed_text(rng: random.Random) -> Case:
    """synthesize-start, the text in pieces, synthesize-stop; over MAX_TTS_CHARS it is refused."""
    text = rng.choice(["Hello there.", "Hi. How are you?", "One, two, three."])
    too_long = rng.random() < 0.4
    if too_long:
        text = "A sentence of a long text. " * rng.randint(2, 200)
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 12))))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    steps: list[bytes | float] = [header("synthesize-start")]
    steps += [header("synthesize-chunk", {"text": piece}) for piece in pieces]
    steps += (
        [header("synthesize"), header("synthesize-stop")]
        if rng.random() < 0.5
        else [header("synthesize-stop")]
    )
    if too_long:
        return Case("streamed_text", steps, error=("MAX_TTS_CHARS",), closes=False)
    return Case("streamed_text", steps, error=None, answer=("synthesize-stopped", "error"), closes=False)


def valid_request(rng: random.Random) -> Case:
    which = rng.choice(["describe", "transcribe", "synthesize", "transcript", "ping"])
    if which == "describe":
        return Case("valid", [header("describe")], answer=("info",), closes=False)
    if which == "ping":
        return Case("valid", [header("ping", {"text": "hi"})], answer=("pong",), closes=False)
    if which == "synthesize":
        steps: list[bytes | float] = [header("synthesize", {"text": "Hello there."})]
        return Case("valid", steps, error=None, answer=("audio-stop", "error"), closes=False)
    if which == "transcript":
        steps = [header("transcript", {"text": "Hi."})]
        return Case("valid", steps, error=None, answer=("handled-stop", "not-handled"), closes=False)
    rate, channels = rng.choice([8_000, 16_000, 44_100]), rng.choice([1, 2])
    fmt = {"rate": rate, "width": 2, "channels": channels}
    audio = pcm(rng, rate, rng.uniform(0.3, 1.5), channels) if channels == 2 else speech_at(rate)
    language = rng.choice(["en", "en-US", None])
    steps = [header("transcribe", {"language": language}), header("audio-start", fmt)]
    step = 4096 * channels
    steps += [header("audio-chunk", fmt, audio[i : i + step]) for i in range(0, len(audio), step)]
    steps.append(header("audio-stop"))
    return Case("valid", steps, error=None, answer=("transcript", "error"), closes=False)


def abandoned(rng: random.Random) -> Case:
    """Half an event, then gone: nobody is left to answer; the slot must come back all the same."""
    fmt = {"rate": 16_000, "width": 2, "channels": 1}
    event = header("audio-chunk", fmt, bytes(2_000))
    return Case("abandoned", [event[: rng.randint(1, len(event) - 1)]], sentinel=False, leaves=True)


CLASSES: list[tuple[Callable[[random.Random], Case], int]] = [
    (nested_header, 3),
    (nested_data, 2),
    (unterminated_header, 1),
    (endless_header, 1),
    (lying_longer, 1),
    (idle_in_text_stream, 1),
    (streamed_text, 2),
    (lying_shorter, 2),
    (huge_length, 3),
    (digits_length, 1),
    (bad_length, 2),
    (audio_start_out_of_range, 3),
    (audio_chunk_out_of_range, 3),
    (long_audio_without_stop, 2),
    (huge_chunk, 1),
    (wrong_transcript_names, 2),
    (lone_surrogate, 3),
    (huge_integer, 2),
    (unknown_type, 2),
    (unserved_type, 1),
    (out_of_order, 2),
    (not_json, 2),
    (slow_peer, 1),
    (idle_peer, 1),
    (ping_only_peer, 1),
    (valid_request, 4),
    (abandoned, 1),
]


def draw_cases(rng: random.Random, count: int) -> list[Case]:
    makers, weights = zip(*CLASSES, strict=True)
    cases = [maker(rng) for maker in makers]  # every class at least once
    cases += [rng.choices(makers, weights)[0](rng) for _ in range(count - len(cases))]
    rng.shuffle(cases)
    return cases
