"""Reward functions: pure Python scorers of a finished conversation.

A reward function takes the episode's messages and its task and returns a float
or a dict of named components; `score` weights the components into one total
and every component is logged as `reward/<name>`. No torch, no ray: rewards are
unit-tested as plain functions. In config a reward is named (see `REWARDS`),
given as a dotted path (`pkg.module:function`), or composed from several:
`{correct: math_verify_match, style: answer_format}` (components are prefixed
by their part's name when a part returns several).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Message = dict[str, Any]
RewardValue = float | dict[str, float]
RewardFn = Callable[[Sequence[Message], dict[str, Any]], RewardValue]
RewardSpec = str | RewardFn | Mapping[str, Any]

REWARDS = {
    "numeric_match": "rewards.math:numeric_match",
    "numeric_close": "rewards.math:numeric_close",
    "math_verify": "rewards.math:math_verify_match",
    "exact_match": "rewards.text:exact_match",
    "answer_format": "rewards.text:answer_format",
    "code_tests": "rewards.code:code_tests",
}
"""Reward functions by config name (imported when named)."""


class RewardConfigError(ValueError):
    """A configured reward cannot be found."""


class Composite:
    """Several reward functions scored together; each part's components keep
    its name (`part` for a float, `part/component` for a dict)."""

    def __init__(self, parts: Mapping[str, RewardFn]):
        if not parts:
            raise RewardConfigError("a composed reward needs at least one part")
        self.parts = dict(parts)

    def __call__(self, messages: Sequence[Message], task: dict[str, Any]) -> dict[str, float]:
        components: dict[str, float] = {}
        for name, fn in self.parts.items():
            value = fn(messages, task)
            if isinstance(value, int | float):
                components[name] = float(value)
            else:
                components.update({f"{name}/{k}": float(v) for k, v in value.items()})
        return components


def resolve_reward(spec: RewardSpec) -> RewardFn:
    """A reward function from a callable, a name in REWARDS, a dotted path
    (`pkg.module:fn` or `pkg.module.fn`) or a mapping of parts to compose."""
    if callable(spec):
        return spec
    if isinstance(spec, Mapping):
        return Composite({name: resolve_reward(part) for name, part in spec.items()})
    if not isinstance(spec, str):
        raise RewardConfigError(f"a reward is a name, a dotted path or a mapping, not {spec!r}")
    path = REWARDS.get(spec, spec)
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr) if module_name else None
    except (ImportError, AttributeError):
        fn = None
    if not callable(fn):
        known = ", ".join(sorted(REWARDS))
        raise RewardConfigError(
            f"unknown reward {spec!r}: use one of {known} or a dotted path like pkg.module:fn"
        )
    return fn


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
