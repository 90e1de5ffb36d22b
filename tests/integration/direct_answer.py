"""DirectAnswer: one turn on a calculator question, rewarded for answering directly.

A task the tiny bootstrapped calculator policy can learn in a few GRPO steps: its
first tokens choose between `<answer>` (about a third of its replies) and a
`<tool_call>`, and only the first choice scores (1 for a reply that gives an
`<answer>...</answer>` and calls no tool, 0 otherwise; the number itself does
not matter). The prompt is the calculator env's own (system prompt, tool
schemas, question drawn from the seed), so the policy starts from the behaviour
its warm-up taught. Loaded by the plugin path as
`tests.integration.direct_answer:DirectAnswerEnv`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.base import AnyText, Message, chat_space
from envs.calculator import CalculatorEnv

Step = tuple[tuple[Message, ...], float, bool, bool, dict[str, Any]]


def answers_directly(reply: str) -> bool:
    return "<answer>" in reply and "</answer>" in reply and "<tool_call>" not in reply


class DirectAnswerEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self._questions = CalculatorEnv()
        self.observation_space = chat_space()
        self.action_space = AnyText()

    @property
    def tool_schemas(self) -> list[dict[str, Any]]:
        """The calculator's, so prompts render as in the policy's warm-up."""
        return self._questions.tool_schemas

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[Message, ...], dict[str, Any]]:
        super().reset(seed=seed)
        observation, _ = self._questions.reset(seed=seed)
        return tuple(observation), {}

    def step(self, action: str) -> Step:
        reward = 1.0 if answers_directly(action) else 0.0
        return ({"role": "user", "content": "Done."},), reward, True, False, {}
