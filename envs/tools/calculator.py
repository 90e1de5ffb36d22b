"""A calculator tool: safe evaluation of arithmetic expressions.

Expressions are parsed with `ast` and only numbers, + - * / // % ** and
parentheses are evaluated; anything else is the model's mistake
(ToolArgumentError). Exponents and magnitudes are bounded so a model cannot
make the tool hang.
"""

from __future__ import annotations

import ast
import asyncio
import operator
import random
from typing import Any

from envs.base import ToolArgumentError, ToolFault, tool_schema

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
MAX_MAGNITUDE = 10**30

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression, or ToolArgumentError."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolArgumentError("expression must be a non-empty string")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolArgumentError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolArgumentError(f"cannot parse {expression!r}") from exc
    return _eval(tree.body)


def format_number(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolArgumentError(f"exponent {right} is larger than {MAX_EXPONENT}")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError as exc:
            raise ToolArgumentError("division by zero") from exc
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise ToolArgumentError("result out of range")
        return value
    raise ToolArgumentError(f"unsupported syntax: {type(node).__name__}")


class Calculator:
    """The `calculator` tool: {"expression": "37 * 12 + 5"} -> "449"."""

    name = "calculator"
    schema = tool_schema(
        "calculator",
        "Evaluate an arithmetic expression.",
        {"expression": {"type": "string", "description": "e.g. 37 * 12 + 5"}},
    )

    def __init__(
        self,
        latency_s: float = 0.0,
        failure_rate: float = 0.0,
        seed: int | None = None,
        slow_rate: float = 0.0,
        slow_latency_s: float = 0.0,
    ):
        self.latency_s = latency_s
        """Simulated service time per call (a remote tool is never instant)."""
        self.slow_rate = slow_rate
        self.slow_latency_s = slow_latency_s
        """Share of calls that take `slow_latency_s` instead: the heavy tail of a
        shared remote service (queueing, cold starts)."""
        self.failure_rate = failure_rate
        """Share of calls on which the simulated service is down (ToolFault)."""
        self._rng = random.Random(seed)

    async def __call__(self, expression: Any = None, **extra: Any) -> str:
        if extra:
            raise ToolArgumentError(f"unexpected arguments: {', '.join(sorted(extra))}")
        value = format_number(evaluate(expression))
        latency = self.slow_latency_s if self._rng.random() < self.slow_rate else self.latency_s
        if latency > 0:
            await asyncio.sleep(latency)
        if self._rng.random() < self.failure_rate:
            raise ToolFault("calculator service unavailable")
        return value
