"""The tool-call parser: the cases that matter, and never an exception whatever the text."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from envs.toolcall import ToolCall, parse_tool_calls
from tests.fuzz import fuzz_examples


def test_single_call_and_prose():
    turn = parse_tool_calls(
        "Let me compute.\n<tool_call>\n"
        '{"name": "calculator", "arguments": {"expression": "1+2"}}\n</tool_call>'
    )
    assert turn.calls == [ToolCall("calculator", {"expression": "1+2"})]
    assert turn.errors == [] and turn.text == "Let me compute."


def test_several_calls_and_string_arguments():
    text = (
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "b", "arguments": "{\\"k\\": 1}"}</tool_call>'
    )
    assert [c.name for c in parse_tool_calls(text).calls] == ["a", "b"]
    assert parse_tool_calls(text).calls[1].arguments == {"k": 1}


def test_no_markup_is_a_final_answer():
    turn = parse_tool_calls("<answer>42</answer>")
    assert not turn.attempted_tool_use


def test_errors_are_typed():
    kinds = lambda text: [e.kind for e in parse_tool_calls(text).errors]  # noqa: E731
    assert kinds("<tool_call>[1, 2]</tool_call>") == ["not_an_object"]
    assert kinds('<tool_call>{"arguments": {}}</tool_call>') == ["missing_name"]
    assert kinds('<tool_call>{"name": "x", "arguments": 3}</tool_call>') == ["bad_arguments"]
    assert kinds("</tool_call>") == ["unopened"]
    assert kinds("<tool_call>{") == ["unclosed"]


MARKUP = st.sampled_from(
    ["<tool_call>", "</tool_call>", "{", "}", '"name"', '"arguments"', ":", ",", '"']
)


FUZZ_EXAMPLES = fuzz_examples(10_000)
"""The issue's bar: at least 10,000 generated turns in every test run."""

JSON_VALUES = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
WELL_FORMED = st.builds(
    lambda name, args: (
        "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"
    ),
    st.text(min_size=1, max_size=10),
    st.dictionaries(
        st.text(max_size=6), JSON_VALUES | st.lists(JSON_VALUES, max_size=3), max_size=3
    ),
)


def _check(turn) -> None:
    assert all(isinstance(c.name, str) and c.name for c in turn.calls)
    assert all(isinstance(c.arguments, dict) for c in turn.calls)
    assert all(e.kind and e.message for e in turn.errors)
    assert isinstance(turn.text, str)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(
    st.lists(
        st.one_of(st.text(max_size=20), MARKUP, WELL_FORMED),
        max_size=30,
    ).map("".join)
)
def test_arbitrary_text_never_raises(text):
    _check(parse_tool_calls(text))


@settings(max_examples=500, deadline=None)
@given(st.lists(WELL_FORMED, min_size=1, max_size=4), st.text(max_size=30))
def test_well_formed_calls_are_all_found(calls, prose):
    turn = parse_tool_calls(prose.replace("<", "") + "".join(calls))
    assert len(turn.calls) == len(calls) and not turn.errors
