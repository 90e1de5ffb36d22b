"""Code-v0: write a Python function; hidden unit tests decide the reward.

The model may run code with the `python` tool (sandboxed, see core/sandbox.py)
as often as `max_turns` allows, and ends with a turn that holds its solution in
a ```python block and no tool call. Reward: `passed` (share of hidden tests,
rewards.code.code_tests) plus a small `format` term.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.sandbox import SandboxLimits
from envs.base import Message, Tool, ToolEnv, dumps_call
from envs.code_tasks import make_task
from envs.tools.python import PythonTool
from rewards import RewardSpec
from rewards.code import code_tests

SYSTEM_PROMPT = (
    "You are an expert Python programmer. You may test code with the python tool. "
    "When you are done, reply with the complete solution in one ```python block."
)


class CodeEnv(ToolEnv):
    def __init__(
        self,
        num_tests: int = 8,
        reward_fn: RewardSpec = code_tests,
        reward_weights: dict[str, float] | None = None,
        max_turns: int = 4,
        tool_timeout_s: float = 30.0,
        tool_retries: int = 1,
        sandbox_wall_s: float = 10.0,
        sandbox_cpu_s: int = 5,
        sandbox_memory_mb: int = 512,
    ):
        self.num_tests = num_tests
        self.limits = SandboxLimits(
            wall_s=sandbox_wall_s, cpu_s=sandbox_cpu_s, memory_mb=sandbox_memory_mb
        )
        weights = {"passed": 1.0, "format": 0.1} if reward_weights is None else reward_weights
        super().__init__(reward_fn, weights, max_turns, tool_timeout_s, tool_retries)

    def make_tools(self) -> list[Tool]:
        return [PythonTool(self.limits)]

    def sample_task(self, rng: np.random.Generator) -> dict[str, Any]:
        return make_task(rng, self.num_tests)

    def opening_messages(self, task: dict[str, Any]) -> list[Message]:
        question = f"{task['statement']}\nExamples:\n{task['examples']}"
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ]


def scripted_reply(task: dict[str, Any], messages: list[Message]) -> str:
    """A competent programmer: try the reference once with the tool, then submit it."""
    if messages[-1]["role"] == "tool":
        return f"Here is my solution.\n```python\n{task['reference']}```"
    probe = task["reference"] + f"\nprint({task['examples'].splitlines()[0].split(' == ')[0]})\n"
    return dumps_call("python", {"code": probe})


def scripted_episode(env: CodeEnv, seed: int) -> list[Message]:
    env.reset(seed=seed)
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(scripted_reply(env.task, env.messages))
    return [dict(m) for m in env.messages]
