"""The tool-call parser: the cases that matter, and never an exception whatever the text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from envs.toolcall import ToolCall, parse_tool_calls


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


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=20), MARKUP), max_size=30).map("".join))
def test_arbitrary_text_never_raises(text):
    turn = parse_tool_calls(text)
    assert all(isinstance(c.arguments, dict) for c in turn.calls)
    assert all(e.message for e in turn.errors)
