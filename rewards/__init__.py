"""Reward functions: pure Python scorers of a finished conversation.

A reward function takes the episode's messages and its task and returns a float
or a dict of named components; `score` weights the components into one total.
No torch, no ray: rewards are unit-tested as plain functions and named in
config by name (see `REWARDS`) or dotted path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Message = dict[str, Any]
RewardValue = float | dict[str, float]
RewardFn = Callable[[Sequence[Message], dict[str, Any]], RewardValue]


def score(
    reward_fn: RewardFn,
    messages: Sequence[Message],
    task: dict[str, Any],
    weights: dict[str, float] | None = None,
) -> tuple[float, dict[str, float]]:
    """Total reward and its components; a component's weight defaults to 1."""
    value = reward_fn(messages, task)
    components = {"reward": float(value)} if isinstance(value, int | float) else dict(value)
    weights = weights or {}
    total = sum(weights.get(name, 1.0) * float(v) for name, v in components.items())
    return float(total), {name: float(v) for name, v in components.items()}


def final_assistant_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.get("role") == "assistant":
            return str(message.get("content") or "")
    return ""
