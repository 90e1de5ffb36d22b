"""The task both sides of bench.peer train on, from asyncrl's own environment: the
prompt of a task seed (the env's opening messages in the policy's chat template,
as asyncrl's engine renders them: core.chat.ChatCodec) and the score of a completion
(the env's own reward for that one reply). Imports neither TRL nor Ray.
"""

from __future__ import annotations

from typing import Any

from core.chat import ChatCodec
from envs import make_env


def prompts(policy: str, env: dict[str, Any], seeds: list[int]) -> list[str]:
    """The rendered opening prompt of each task seed."""
    from transformers import AutoTokenizer

    made = make_env(env["id"], env["kwargs"])
    codec = ChatCodec(AutoTokenizer.from_pretrained(policy), made.tool_schemas)
    rendered = []
    for seed in seeds:
        messages, _ = made.reset(seed=seed)
        rendered.append(codec.render(messages, add_generation_prompt=True))
    return rendered


def score(env: dict[str, Any], seed: int, reply: str) -> float:
    """The env's reward for `reply` as the one turn of the task `seed` (a tool call
    ends a one-turn episode unanswered)."""
    made = make_env(env["id"], env["kwargs"])
    made.reset(seed=seed)
    _, reward, *_ = made.step(reply)
    return float(reward)


def correct(env: dict[str, Any], seed: int, reply: str) -> bool:
    """Whether `reply` answers task `seed` right (the reward's `correct` part)."""
    made = make_env(env["id"], env["kwargs"])
    made.reset(seed=seed)
    *_, info = made.step(reply)
    return (info.get("reward_components") or {}).get("correct", 0.0) > 0
