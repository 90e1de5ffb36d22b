"""ScriptedTurns: a test env whose timing and faults do not depend on the policy.

Whatever the model writes, an episode runs `turns` turns, each env reply arrives
`reply_s` later, and each step fails as an infrastructure fault (the env's, not
the model's: `info["failure"]`, as a tool down past its retries) with
probability `failure_rate`. So multi-turn timing and fault handling in a test do
not depend on what the shared test policy has learned (after runs on a failing
tool it stops calling tools). Only a turn the model never ends (cut at
max_tokens_per_turn) ends an episode early, as the agent loop truncates there;
the reward favours short replies so training here does not teach that. Loaded
by the plugin path as `tests.integration.scripted_turns:ScriptedTurnsEnv`.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import gymnasium as gym

from envs.base import AnyText, Message, chat_space

Step = tuple[tuple[Message, ...], float, bool, bool, dict[str, Any]]


class ScriptedTurnsEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, turns: int = 3, reply_s: float = 0.0, failure_rate: float = 0.0):
        self.turns = turns
        self.reply_s = reply_s
        self.failure_rate = failure_rate
        self._faults = random.Random()
        """Independent of the episode seed, as a real outage is: a group shares its
        task seed, and a fault drawn from it would hit every member and every re-run."""
        self.observation_space = chat_space()
        self.action_space = AnyText()
        self._turn = 0
        self._chars = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[Message, ...], dict[str, Any]]:
        super().reset(seed=seed)
        self._turn = self._chars = 0
        start = int(self.np_random.integers(1, 100))
        return ({"role": "user", "content": f"Count up from {start}, one number a turn."},), {}

    def step(self, action: str) -> Step:
        self._turn += 1
        self._chars += len(action)
        reply = {"role": "user", "content": f"Turn {self._turn} noted. Next."}
        if self._faults.random() < self.failure_rate:
            return (reply,), 0.0, True, False, {"failure": "scripted service unavailable"}
        done = self._turn >= self.turns
        reward = 1 - min(self._chars, 400) / 400 if done else 0.0  # varies, so groups train
        return (reply,), reward, False, done, {}

    async def astep(self, action: str) -> Step:
        await asyncio.sleep(self.reply_s)
        return self.step(action)
