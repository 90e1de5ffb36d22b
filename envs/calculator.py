"""Calculator-v0: arithmetic word problems solved with a calculator tool.

The model may call `calculator` any number of turns (up to `max_turns`) and
must end with a turn that states `<answer>number</answer>`. Difficulty is the
number of operands and their size; answers are integers (no division).
`tool_latency_s` gives the calculator the service time of a remote tool and
`tool_failure_rate` its outages (ToolFault: the environment's fault), to
exercise the fault handling end to end; `tool_slow_rate` of the calls take
`tool_slow_latency_s` instead (a heavy-tailed service time, as stragglers).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.base import Message, Tool, ToolEnv, dumps_call
from envs.tools.calculator import Calculator, evaluate, format_number
from rewards import RewardSpec
from rewards.math import numeric_match

SYSTEM_PROMPT = (
    "You are a careful assistant. Use the calculator tool for arithmetic, "
    "then give the final answer as <answer>number</answer>."
)
QUESTION_FORMS = ("What is {}?", "Compute {}.", "Calculate {}.", "Evaluate {}.")


class CalculatorEnv(ToolEnv):
    def __init__(
        self,
        min_operands: int = 2,
        max_operands: int = 3,
        max_value: int = 99,
        operators: str = "+-*",
        reward_fn: RewardSpec = numeric_match,
        reward_weights: dict[str, float] | None = None,
        max_turns: int = 3,
        tool_timeout_s: float = 5.0,
        tool_retries: int = 1,
        tool_latency_s: float = 0.0,
        tool_failure_rate: float = 0.0,
        tool_slow_rate: float = 0.0,
        tool_slow_latency_s: float = 0.0,
    ):
        if not 2 <= min_operands <= max_operands:
            raise ValueError("need 2 <= min_operands <= max_operands")
        if max_value < 1 or not operators or set(operators) - set("+-*"):
            raise ValueError("max_value must be >= 1 and operators a subset of '+-*'")
        self.min_operands = min_operands
        self.max_operands = max_operands
        self.max_value = max_value
        self.operators = operators
        self.tool_latency_s = tool_latency_s
        self.tool_failure_rate = tool_failure_rate
        self.tool_slow = (tool_slow_rate, tool_slow_latency_s)
        weights = {"correct": 1.0, "format": 0.1} if reward_weights is None else reward_weights
        super().__init__(reward_fn, weights, max_turns, tool_timeout_s, tool_retries)

    def make_tools(self) -> list[Tool]:
        slow_rate, slow_latency_s = self.tool_slow
        return [
            Calculator(
                self.tool_latency_s,
                self.tool_failure_rate,
                slow_rate=slow_rate,
                slow_latency_s=slow_latency_s,
            )
        ]

    def sample_task(self, rng: np.random.Generator) -> dict[str, Any]:
        count = int(rng.integers(self.min_operands, self.max_operands + 1))
        numbers = [int(n) for n in rng.integers(1, self.max_value + 1, size=count)]
        ops = [self.operators[int(i)] for i in rng.integers(0, len(self.operators), size=count - 1)]
        expression = str(numbers[0])
        for op, number in zip(ops, numbers[1:], strict=True):
            expression += f" {op} {number}"
        form = QUESTION_FORMS[int(rng.integers(0, len(QUESTION_FORMS)))]
        return {
            "question": form.format(expression),
            "expression": expression,
            "answer": format_number(evaluate(expression)),
        }

    def opening_messages(self, task: dict[str, Any]) -> list[Message]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": task["question"]},
        ]


def scripted_reply(task: dict[str, Any], messages: list[Message], use_tool: bool) -> str:
    """What a competent assistant says next: call the calculator once, then
    answer with its result; or, with `use_tool=False`, answer at once."""
    last = messages[-1]
    if last["role"] == "tool":
        return f"<answer>{last['content']}</answer>"
    if use_tool:
        return dumps_call("calculator", {"expression": task["expression"]})
    return f"<answer>{task['answer']}</answer>"


def scripted_episode(env: CalculatorEnv, seed: int, use_tool: bool) -> list[Message]:
    """A complete demonstration dialogue produced by running the real env."""
    env.reset(seed=seed)
    terminated = truncated = False
    while not (terminated or truncated):
        reply = scripted_reply(env.task, env.messages, use_tool)
        _, _, terminated, truncated, _ = env.step(reply)
    return [dict(m) for m in env.messages]
