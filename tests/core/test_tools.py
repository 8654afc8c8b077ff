"""Tools as clients send them, and calls as models write them: the checks and the reading."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backend.app.backends.tool_format import ToolTextScanner, parse_calls
from backend.app.core.errors import InvalidInputError
from backend.app.core.tools import ToolRequest, call_schema, check_arguments, check_tool, check_tools
from backend.app.core.values import ToolSpec

WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
    },
)
NAMES = {"get_weather", "set_timer"}


def _deep(levels: int) -> dict[str, object]:
    schema: dict[str, object] = {"type": "object"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


@pytest.mark.parametrize(
    ("name", "parameters", "field"),
    [
        ("bad name!", None, "tools[0].name"),
        ("", None, "tools[0].name"),
        ("x" * 65, None, "tools[0].name"),
        (7, None, "tools[0].name"),
        ("ok", "a string", "tools[0].parameters"),
        ("ok", [], "tools[0].parameters"),
        ("ok", {"type": "array"}, "tools[0].parameters"),
        ("ok", {"type": "object", "properties": {"a": {"type": "no-such-type"}}}, "tools[0].parameters"),
        ("ok", {"type": "object", "required": "city"}, "tools[0].parameters"),
        ("ok", {"type": "object", "properties": {"x": {"description": "d" * 70_000}}}, "tools[0].parameters"),
        (
            "ok",
            {"type": "object", "properties": {"x": {"$ref": "https://example.org/s.json"}}},
            "tools[0].parameters",
        ),
        ("ok", {"type": "object", "properties": {"x": {"$ref": "#/$defs/Missing"}}}, "tools[0].parameters"),
        ("ok", _deep(3000), "tools[0].parameters"),
    ],
)
def test_a_malformed_tool_is_refused_naming_its_field(name: object, parameters: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        check_tool(0, name, None, parameters, "tools")
    assert refused.value.param == field, refused.value


def test_a_tool_without_parameters_takes_an_empty_object() -> None:
    spec = check_tool(0, "now", "The time", None, "tools")
    assert check_arguments(spec, "{}") is None and check_arguments(spec, "") is None


def test_the_request_as_a_whole_is_checked() -> None:
    with pytest.raises(InvalidInputError, match="twice"):
        check_tools([WEATHER, WEATHER], "auto")
    with pytest.raises(InvalidInputError, match="not in tools"):
        check_tools([WEATHER], "set_timer")
    with pytest.raises(InvalidInputError, match="needs tools"):
        check_tools([], "required")
    check_tools([WEATHER], "get_weather")


def test_the_offered_tools_follow_the_choice() -> None:
    timer = ToolSpec("set_timer", "", {"type": "object"})
    assert ToolRequest((WEATHER, timer), "none").offered == ()
    assert ToolRequest((WEATHER, timer), "set_timer").offered == (timer,)
    assert ToolRequest((WEATHER, timer), "set_timer").forced
    assert not ToolRequest((WEATHER, timer), "auto").forced


@pytest.mark.parametrize(
    ("arguments", "fine"),
    [
        ('{"city": "Paris"}', True),
        ('{"city": "Paris", "unit": "c"}', True),
        ({"city": "Oslo"}, True),
        ('{"unit": "c"}', False),  # city is required
        ('{"city": "Paris", "unit": "kelvin"}', False),
        ('{"city": 7}', False),
        ('["Paris"]', False),
        ('{"city": "Paris"', False),
        ("not json", False),
    ],
)
def test_arguments_are_checked_against_the_schema(arguments: str, fine: bool) -> None:
    assert (check_arguments(WEATHER, arguments) is None) == fine


def test_local_definitions_are_followed_and_moved_up_for_the_grammar() -> None:
    parameters = {
        "type": "object",
        "properties": {"where": {"$ref": "#/$defs/Place"}},
        "required": ["where"],
        "$defs": {
            "Place": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        },
    }
    spec = check_tool(0, "go", "", parameters, "tools")
    assert check_arguments(spec, '{"where": {"city": "Oslo"}}') is None
    assert check_arguments(spec, '{"where": {}}') is not None
    schema = call_schema([spec])
    assert "Place" in schema["$defs"] and "$defs" not in schema["properties"]["arguments"]


def test_the_call_schema_names_each_function() -> None:
    timer = ToolSpec("set_timer", "", {"type": "object", "properties": {"minutes": {"type": "integer"}}})
    one = call_schema([WEATHER])
    assert one["properties"]["name"] == {"const": "get_weather"}
    both = call_schema([WEATHER, timer])
    assert [o["properties"]["name"]["const"] for o in both["anyOf"]] == ["get_weather", "set_timer"]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}',  # cut before its end
        '<tools>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tools>',
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',  # Llama 3.x
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        '{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}',
    ],
)
def test_each_template_familys_call_is_read(text: str) -> None:
    calls, attempt = parse_calls(text, NAMES)
    assert attempt and [c.name for c in calls] == ["get_weather"]
    arguments = calls[0].arguments
    assert (json.loads(arguments) if isinstance(arguments, str) else arguments) == {"city": "Paris"}


def test_several_calls_are_read_in_order() -> None:
    text = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
        '<tool_call>{"name": "set_timer", "arguments": {"minutes": 5}}</tool_call>'
    )
    calls, _ = parse_calls(text, NAMES)
    assert [c.name for c in calls] == ["get_weather", "set_timer"]


@pytest.mark.parametrize(
    ("text", "attempt"),
    [
        ("Paris is sunny today.", False),
        ('```python\nprint("hi")\n```', False),  # a code sample, not a call
        ('```json\n{"colour": "red"}\n```', False),
        ('<tool_call>{"name": "get_weather", "arguments": {"city": ', True),  # broken JSON
        ('<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>', True),  # not offered
        ('{"name": "launch_rockets"}', False),  # a JSON answer, not a call of an offered function
        ('{"name": "Bob", "age": 3}', False),
        ("[1, 2, 3]", False),
        ("[a link](https://example.org)", False),
        ('{"name": "get_weather", "arguments": {"city": ', True),  # broken, but naming one
    ],
)
def test_text_that_is_no_usable_call(text: str, attempt: bool) -> None:
    calls, attempted = parse_calls(text, NAMES)
    assert calls == [] and attempted == attempt


def _scan(deltas: list[str]) -> tuple[str, str]:
    scanner = ToolTextScanner()
    said = "".join(scanner.feed(d) for d in deltas)
    return said, scanner.held()


def test_the_scanner_lets_an_answer_through_and_holds_a_call() -> None:
    said, held = _scan(["It is ", "sunny. <tool", "_call>", '{"name": "x"}', "</tool_call>"])
    assert said == "It is sunny. " and held == '<tool_call>{"name": "x"}</tool_call>'
    said, held = _scan(["Sure", " thing", "!"])
    assert said == "Sure thing!" and held == ""
    said, held = _scan(["  ", '{"name"', ': "x"}'])  # a reply that opens with an object
    assert said == "" and held.strip() == '{"name": "x"}'
    said, held = _scan(["Use `", "`", "x"])  # a partial fence is held, then given back when it is not one
    assert said + held == "Use ``x"


class _Writes:
    """An engine that writes what it is given: `free` when unconstrained, `under_grammar` under a
    schema's grammar. What is checked is what the llama.cpp engine's reading does with a call that
    is not JSON (the real model's calls are tested in tests/backends/test_llamacpp_tools.py)."""

    def __init__(self, free: str, under_grammar: str) -> None:
        self.free, self.under_grammar = free, under_grammar
        self.schemas: list[object] = []

    def render(self, messages: object, tools: object = ()) -> str:
        return "<|im_start|>system\nFor each call, write <tool_call></tool_call>.<|im_end|>\n"

    def complete(self, prompt: str, options: object, on_text: Any, schema: object = None) -> bool:
        self.schemas.append(schema)
        text = self.free if schema is None else self.under_grammar
        return any(piece and on_text(piece) for piece in (text[:10], text[10:]))


def _items(engine: _Writes, request: ToolRequest) -> list[object]:
    from backend.app.backends.llamacpp_tools import run_with_tools
    from backend.app.core.values import ChatMessage, GenerationOptions

    items: list[object] = []
    run_with_tools(
        engine, [ChatMessage("user", "weather?")], GenerationOptions(32, 0.0), request, items.append
    )  # type: ignore[arg-type]
    return items


def test_a_call_that_is_not_json_is_written_again_under_the_grammar() -> None:
    from backend.app.core.values import CallPending, ToolCall

    engine = _Writes(
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": ',
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
    )
    items = _items(engine, ToolRequest((WEATHER,)))
    assert isinstance(items[0], CallPending) and len(items) == 2
    assert isinstance(items[1], ToolCall) and json.loads(items[1].arguments) == {"city": "Oslo"}
    assert engine.schemas[0] is None and engine.schemas[1] == call_schema([WEATHER])


def test_a_call_that_fails_even_under_the_grammar_comes_back_as_text() -> None:
    from backend.app.core.values import ToolCall

    refused = '<tool_call>{"name": "get_weather", "arguments": {"unit": "kelvin"}}'
    engine = _Writes(refused, '{"name": "get_weather", "arguments": {"unit": "x"}}')
    items = _items(engine, ToolRequest((WEATHER,)))
    assert not any(isinstance(i, ToolCall) for i in items)
    said = "".join(i for i in items if isinstance(i, str))
    assert said == refused  # the model's own text, once (not the retry's as well)
