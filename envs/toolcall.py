"""Parsing Qwen3/Hermes tool calls out of model text.

A call is a JSON object `{"name": str, "arguments": {...}}` between
`<tool_call>` and `</tool_call>`; a turn may hold several. Parsing never
raises: whatever the model wrote comes back as well-formed calls plus typed
errors, and the errors are shown to the model as its own mistake.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core.chat import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

MAX_ERROR_SNIPPET = 200


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolCallError:
    """A malformed call: `kind` is a stable metric label, `message` is for the model."""

    kind: str
    message: str


@dataclass
class ParsedTurn:
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[ToolCallError] = field(default_factory=list)
    text: str = ""
    """The turn's text outside any tool-call block."""

    @property
    def attempted_tool_use(self) -> bool:
        return bool(self.calls or self.errors)


def parse_tool_calls(text: str) -> ParsedTurn:
    """Split `text` into tool calls, parse errors and the remaining prose."""
    turn = ParsedTurn()
    outside: list[str] = []
    pos = 0
    while True:
        start = text.find(TOOL_CALL_OPEN, pos)
        stray_close = text.find(TOOL_CALL_CLOSE, pos)
        if stray_close >= 0 and (start < 0 or stray_close < start):
            turn.errors.append(_error("unopened", f"{TOOL_CALL_CLOSE} without {TOOL_CALL_OPEN}"))
            outside.append(text[pos:stray_close])
            pos = stray_close + len(TOOL_CALL_CLOSE)
            continue
        if start < 0:
            outside.append(text[pos:])
            break
        outside.append(text[pos:start])
        body_start = start + len(TOOL_CALL_OPEN)
        end = text.find(TOOL_CALL_CLOSE, body_start)
        if end < 0:
            turn.errors.append(_error("unclosed", f"{TOOL_CALL_OPEN} is never closed"))
            break
        _parse_call_body(text[body_start:end], turn)
        pos = end + len(TOOL_CALL_CLOSE)
    turn.text = "".join(outside).strip()
    return turn


def _parse_call_body(body: str, turn: ParsedTurn) -> None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        turn.errors.append(_error("invalid_json", f"tool call is not valid JSON: {_snip(body)}"))
        return
    if not isinstance(payload, dict):
        turn.errors.append(_error("not_an_object", "tool call must be a JSON object"))
        return
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        turn.errors.append(_error("missing_name", 'tool call needs a string "name"'))
        return
    arguments = payload.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            arguments = None
    if not isinstance(arguments, dict):
        turn.errors.append(_error("bad_arguments", f'"arguments" of {name!r} must be an object'))
        return
    turn.calls.append(ToolCall(name=name, arguments=arguments))


def _error(kind: str, message: str) -> ToolCallError:
    return ToolCallError(kind=kind, message=message)


def _snip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_ERROR_SNIPPET else text[:MAX_ERROR_SNIPPET] + "..."
