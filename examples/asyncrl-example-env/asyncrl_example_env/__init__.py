"""Capitals-v0: name a country's capital, with a `lookup` tool (an asyncrl plugin)."""

from __future__ import annotations

import random

import gymnasium as gym

from envs.base import ToolArgumentError, ToolEnv, ToolFault, tool_schema

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Chile": "Santiago",
}


class Lookup:
    name = "lookup"
    schema = tool_schema("lookup", "The capital of a country.", {"country": {"type": "string"}})

    def __init__(self, flaky: float):
        self.flaky = flaky  # share of calls that crash, to try the fault handling

    async def __call__(self, country: str) -> str:
        if random.random() < self.flaky:
            raise ToolFault("the lookup service is down")
        if country not in CAPITALS:
            raise ToolArgumentError(f"unknown country {country!r}")
        return CAPITALS[country]


class CapitalsEnv(ToolEnv):
    def __init__(self, flaky: float = 0.0, max_turns: int = 3, **kwargs):
        self.flaky = flaky
        super().__init__("exact_match", {"correct": 1.0, "format": 0.1}, max_turns, **kwargs)

    def make_tools(self):
        return [Lookup(self.flaky)]

    def sample_task(self, rng):
        country = sorted(CAPITALS)[int(rng.integers(len(CAPITALS)))]
        return {"country": country, "answer": CAPITALS[country]}

    def opening_messages(self, task):
        return [
            {"role": "system", "content": "Answer as <answer>city</answer>."},
            {"role": "user", "content": f"What is the capital of {task['country']}?"},
        ]


def register() -> None:
    gym.register(id="example/Capitals-v0", entry_point="asyncrl_example_env:CapitalsEnv")
