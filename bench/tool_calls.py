"""The local LLM candidates scored on tool calling: spoken requests over ten home-assistant functions.

Each request is written as a transcript reads (lower case, fillers, no punctuation at times) and
says what a right reply is: a call to one function with arguments that match (a city or an item
named, a number exact), or no call at all (small talk, a question no function answers). The engine
is the server's llama.cpp engine, with the server's system prompt, the ten functions offered
(`tool_choice: auto`), greedy, at most 64 tokens; one model loaded at a time.

Per model: right function (of the requests that need one), right arguments (of those), no call
where none is needed, invalid calls that reached the client (must be 0: a call whose arguments fail
the schema is regenerated under the grammar or given back as text), and the latency a spoken turn
would feel: the time to the decision (the call ready, or the first word of an answer), and for a
call the time to the first word of the answer that uses the tool's result (the result fed back at
once: the tool itself costs nothing here).
"""

from __future__ import annotations

import gc
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.app.core.config import Settings
from backend.app.core.tools import ToolRequest, check_arguments
from backend.app.core.values import CallPending, ChatMessage, GenerationOptions, ToolCall, ToolSpec
from bench import machine
from bench.common import median, percentile, table
from bench.llm_quality import candidates

OPTIONS = GenerationOptions(max_tokens=64, temperature=0.0)


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_TEXT = {"type": "string"}
FUNCTIONS = (
    ToolSpec("get_weather", "Get the current weather in a city", _object({"city": _TEXT}, ["city"])),
    ToolSpec(
        "set_timer",
        "Start a countdown timer",
        _object(
            {"minutes": {"type": "number", "description": "Length of the timer in minutes"}}, ["minutes"]
        ),
    ),
    ToolSpec("play_music", "Play music: a song, an artist or a genre", _object({"query": _TEXT}, ["query"])),
    ToolSpec(
        "set_light",
        "Turn the lights in a room on or off",
        _object({"room": _TEXT, "on": {"type": "boolean"}}, ["room", "on"]),
    ),
    ToolSpec(
        "set_thermostat",
        "Set the heating to a temperature in degrees Celsius",
        _object({"celsius": {"type": "number"}}, ["celsius"]),
    ),
    ToolSpec("add_to_shopping_list", "Add an item to the shopping list", _object({"item": _TEXT}, ["item"])),
    ToolSpec(
        "send_message",
        "Send a text message to a contact",
        _object({"to": _TEXT, "text": _TEXT}, ["to", "text"]),
    ),
    ToolSpec("get_time", "The current time in a city", _object({"city": _TEXT}, ["city"])),
    ToolSpec(
        "create_reminder",
        "Remind the user of something at a time",
        _object(
            {"what": _TEXT, "when": {"type": "string", "description": "e.g. 7pm, tomorrow 9am"}},
            ["what", "when"],
        ),
    ),
    ToolSpec("get_calendar", "The user's calendar events for a day", _object({"day": _TEXT}, ["day"])),
)


@dataclass(frozen=True)
class Request:
    text: str
    function: str | None = None
    """The function a right reply calls; None: a right reply calls none."""
    arguments: dict[str, Any] = field(default_factory=dict)
    """Expected arguments: text is found in the value (case aside), numbers and booleans equal."""


R = Request
REQUESTS = (
    R("what's the weather like in berlin today", "get_weather", {"city": "berlin"}),
    R("um is it going to rain in seattle", "get_weather", {"city": "seattle"}),
    R("how cold is it in oslo right now", "get_weather", {"city": "oslo"}),
    R("tell me the weather in tokyo please", "get_weather", {"city": "tokyo"}),
    R("set a timer for ten minutes", "set_timer", {"minutes": 10}),
    R("can you start a five minute timer", "set_timer", {"minutes": 5}),
    R("timer for twenty five minutes please", "set_timer", {"minutes": 25}),
    R("uh i need a timer for three minutes for the eggs", "set_timer", {"minutes": 3}),
    R("play some jazz", "play_music", {"query": "jazz"}),
    R("put on bohemian rhapsody by queen", "play_music", {"query": "bohemian rhapsody"}),
    R("i'd like to listen to some taylor swift", "play_music", {"query": "taylor swift"}),
    R("play relaxing piano music", "play_music", {"query": "piano"}),
    R("turn on the lights in the kitchen", "set_light", {"room": "kitchen", "on": True}),
    R("switch off the bedroom light", "set_light", {"room": "bedroom", "on": False}),
    R("could you turn the living room lights off", "set_light", {"room": "living room", "on": False}),
    R("lights on in the bathroom please", "set_light", {"room": "bathroom", "on": True}),
    R("set the heating to twenty one degrees", "set_thermostat", {"celsius": 21}),
    R("make it nineteen degrees in here", "set_thermostat", {"celsius": 19}),
    R("turn the thermostat up to twenty three", "set_thermostat", {"celsius": 23}),
    R("set the temperature to eighteen degrees celsius", "set_thermostat", {"celsius": 18}),
    R("add milk to my shopping list", "add_to_shopping_list", {"item": "milk"}),
    R("put eggs on the shopping list", "add_to_shopping_list", {"item": "eggs"}),
    R("we're out of coffee add it to the list", "add_to_shopping_list", {"item": "coffee"}),
    R("remember to buy bread add that to my shopping list", "add_to_shopping_list", {"item": "bread"}),
    R("send a message to anna saying i'll be late", "send_message", {"to": "anna", "text": "late"}),
    R("text mom that i'm on my way", "send_message", {"to": "mom", "text": "on my way"}),
    R("tell david via text that dinner is ready", "send_message", {"to": "david", "text": "dinner"}),
    R("message sarah happy birthday", "send_message", {"to": "sarah", "text": "birthday"}),
    R("what time is it in new york", "get_time", {"city": "new york"}),
    R("do you know the time in sydney", "get_time", {"city": "sydney"}),
    R("what's the time over in london now", "get_time", {"city": "london"}),
    R("uh what time is it in paris", "get_time", {"city": "paris"}),
    R("remind me to call the dentist tomorrow at nine", "create_reminder", {"what": "dentist"}),
    R("set a reminder to take out the trash at 7pm", "create_reminder", {"what": "trash"}),
    R("remind me at noon to water the plants", "create_reminder", {"what": "plants"}),
    R("don't let me forget to pick up the kids at three", "create_reminder", {"what": "kids"}),
    R("what's on my calendar today", "get_calendar", {"day": "today"}),
    R("do i have anything scheduled tomorrow", "get_calendar", {"day": "tomorrow"}),
    R("what meetings do i have on friday", "get_calendar", {"day": "friday"}),
    R("am i free on monday", "get_calendar", {"day": "monday"}),
    R("hello how are you"),
    R("tell me a joke"),
    R("thanks that's all for now"),
    R("what's the capital of italy"),
    R("how many legs does a spider have"),
    R("who wrote romeo and juliet"),
    R("what is two plus two"),
    R("good night"),
    R("can you explain what a rainbow is"),
    R("what's your name"),
)
RESULT = '{"ok": true, "result": "done", "temperature_c": 18, "time": "14:05", "events": ["lunch at 1pm"]}'


@dataclass
class Outcome:
    request: Request
    calls: list[ToolCall]
    text: str
    decision_s: float
    answer_s: float | None = None
    """For a call: the decision, then the first word of the answer that uses the result."""

    @property
    def right_function(self) -> bool:
        names = [c.name for c in self.calls]
        return names[:1] == [self.request.function] if self.request.function else not names

    @property
    def right_arguments(self) -> bool:
        if not self.right_function or not self.request.function:
            return self.right_function
        given = json.loads(self.calls[0].arguments)
        return all(_matches(given.get(k), v) for k, v in self.request.arguments.items())

    @property
    def invalid(self) -> int:
        specs = {s.name: s for s in FUNCTIONS}
        return sum(
            1 for c in self.calls if c.name not in specs or check_arguments(specs[c.name], c.arguments)
        )


def _matches(given: Any, expected: Any) -> bool:
    if isinstance(expected, bool):
        return given is expected
    if isinstance(expected, int | float):
        return (
            isinstance(given, int | float) and not isinstance(given, bool) and float(given) == float(expected)
        )
    return isinstance(given, str) and str(expected).lower() in re.sub(r"\s+", " ", given.lower())


def ask(engine: Any, system: str, request: Request) -> Outcome:
    messages = [ChatMessage("system", system), ChatMessage("user", request.text)]
    tools = ToolRequest(FUNCTIONS)
    began = time.perf_counter()
    decided: float | None = None
    calls: list[ToolCall] = []
    text: list[str] = []
    for item in engine.chat_tools_stream(messages, OPTIONS, tools):
        if isinstance(item, CallPending):
            continue
        if decided is None and (isinstance(item, ToolCall) or str(item).strip()):
            decided = time.perf_counter() - began
        (calls if isinstance(item, ToolCall) else text).append(item)
    outcome = Outcome(request, calls, "".join(text), decided or time.perf_counter() - began)
    if calls:
        follow = [
            *messages,
            ChatMessage("assistant", "", tool_calls=tuple(calls)),
            *(ChatMessage("tool", RESULT, tool_call_id=c.id) for c in calls),
        ]
        started = time.perf_counter()
        for item in engine.chat_tools_stream(follow, OPTIONS, tools):
            if isinstance(item, str) and item.strip():
                outcome.answer_s = outcome.decision_s + time.perf_counter() - started
                break
    return outcome


def measure(settings: Settings) -> dict[str, list[Outcome]]:
    """Every candidate on every request, one model loaded at a time."""
    from backend.app.backends.llamacpp_llm import LlamaCppChatBackend

    system = settings.llm.system_prompt
    results: dict[str, list[Outcome]] = {}
    for label, model in candidates(settings).items():
        engine = LlamaCppChatBackend(
            model, settings.llm.context_tokens, models_dir=settings.storage.models_dir
        )
        try:
            ask(engine, system, Request("hi"))  # warm-up: the tools' prompt in the cache, as a server has it
            outcomes = []
            for request in REQUESTS:
                outcome = ask(engine, system, request)
                outcomes.append(outcome)
                got = [f"{c.name}({c.arguments})" for c in outcome.calls] or [repr(outcome.text[:60])]
                mark = "ok" if outcome.right_arguments else "WRONG"
                print(f"tool calls {label}: {request.text!r} -> {', '.join(got)} {mark}", flush=True)
            results[label] = outcomes
        finally:
            engine.close()
            gc.collect()
    return results


def section(results: dict[str, list[Outcome]], out: Path | None = None) -> list[str]:
    calling = sum(1 for r in REQUESTS if r.function)
    rows = []
    for label, outcomes in results.items():
        needs = [o for o in outcomes if o.request.function]
        plain = [o for o in outcomes if not o.request.function]
        decisions = [o.decision_s for o in outcomes]
        answers = [o.answer_s for o in needs if o.answer_s is not None]
        rows.append(
            (
                label,
                f"{sum(o.right_function for o in needs)}/{len(needs)}",
                f"{sum(o.right_arguments for o in needs)}/{len(needs)}",
                f"{sum(o.right_function for o in plain)}/{len(plain)}",
                f"{sum(o.right_arguments for o in outcomes) / len(outcomes):.0%}",
                sum(o.invalid for o in outcomes),
                f"{median(decisions):.2f} / {percentile(decisions, 90):.2f}",
                f"{median(answers):.2f}" if answers else "-",
            )
        )
    headers = (
        "Model",
        "Right function",
        "Right arguments",
        "No call when none is needed",
        "All right",
        "Invalid calls returned",
        "Decision s (median / p90)",
        "First word of the answer after a call, s (median)",
    )
    return [
        "## Tool calling: the local candidates",
        "",
        f"{len(REQUESTS)} spoken-style requests ({calling} that need one of {len(FUNCTIONS)} functions, "
        f"{len(REQUESTS) - calling} that need none), `bench/tool_calls.py`; the server's llama.cpp engine "
        "and system prompt, greedy, 64 tokens at most, all ten functions offered (`tool_choice: auto`). "
        '"Decision": the call ready or the first word of a plain answer; the answer after a call '
        "adds a second generation with the tool's result fed back at once. " + machine.summary(),
        "",
        *table(headers, rows),
        "",
    ]
