"""ReasoningGym-v0: one `reasoning_gym` procedural dataset as a single-turn env.

Owns choosing a task per seed, the prompt, pulling the answer out of the reply
and scoring it with the dataset's own `score_answer`. `reset(seed)` poses entry
`seed % size` of a dataset built once per (name, kwargs, size, dataset seed)
and cached in-process; the first `step(reply)` ends the episode with reward
`sum(weight * component)` over the components `correct` (the dataset's score,
in [0, 1], partial credit allowed) and `format` (the reply used <answer> tags).
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from functools import lru_cache
from typing import Any

import gymnasium as gym

from envs import EnvConfigError
from envs.base import AnyText, Message, chat_space

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
LIST_HINT = "python -c 'import reasoning_gym; print(sorted(reasoning_gym.factory.DATASETS))'"


def extract_answer(text: str) -> tuple[str, bool]:
    """The answer a reply commits to and whether it used <answer> tags: the last
    tag's content, else the whole reply after any </think>."""
    text = text.rsplit("</think>", 1)[-1]
    tagged = ANSWER_TAG.findall(text)
    if tagged:
        return tagged[-1].strip(), True
    return text.strip(), False


def load_dataset(name: str, kwargs: dict[str, Any], size: int, seed: int) -> Any:
    """The (cached) dataset; a bad name or bad kwargs is an EnvConfigError."""
    import reasoning_gym

    known = sorted(reasoning_gym.factory.DATASETS)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3) or known[:5]
        raise EnvConfigError(
            f"unknown reasoning_gym dataset {name!r}; did you mean one of {close}? "
            f"({len(known)} datasets, list them with: {LIST_HINT})"
        )
    try:
        key = json.dumps(kwargs, sort_keys=True)
    except TypeError as exc:
        raise EnvConfigError(f"reasoning_gym dataset_kwargs must be plain data: {exc}") from exc
    return _build(name, key, size, seed)


@lru_cache(maxsize=64)
def _build(name: str, kwargs_json: str, size: int, seed: int) -> Any:
    import reasoning_gym

    try:
        return reasoning_gym.create_dataset(name, size=size, seed=seed, **json.loads(kwargs_json))
    except (TypeError, ValueError, AssertionError) as exc:
        raise EnvConfigError(
            f"reasoning_gym dataset {name!r} rejects dataset_kwargs {kwargs_json}: {exc}"
        ) from exc


class ReasoningGymEnv(gym.Env):
    """Single turn: the question as a user message, the reply scored at once."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        dataset: str = "basic_arithmetic",
        dataset_kwargs: dict[str, Any] | None = None,
        size: int = 10_000,
        dataset_seed: int = 0,
        system_prompt: str | None = None,
        reward_weights: dict[str, float] | None = None,
    ):
        if size < 1:
            raise EnvConfigError("reasoning_gym size must be >= 1")
        self.dataset_name = dataset
        self.dataset = load_dataset(dataset, dict(dataset_kwargs or {}), size, dataset_seed)
        self.size = size
        if system_prompt is None:
            from reasoning_gym.utils import SYSTEM_PROMPTS

            system_prompt = SYSTEM_PROMPTS["default"]
        self.system_prompt = system_prompt
        self.reward_weights = {"correct": 1.0, "format": 0.1}
        self.reward_weights.update(reward_weights or {})
        self.observation_space = chat_space()
        self.action_space = AnyText()
        self.entry: dict[str, Any] = {}
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[Message, ...], dict[str, Any]]:
        super().reset(seed=seed)
        index = seed % self.size if seed is not None else int(self.np_random.integers(self.size))
        self.entry = self.dataset[index]
        self._done = False
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": self.entry["question"]},
        ]
        task = {"dataset": self.dataset_name, "index": index, **copy.deepcopy(self.entry)}
        return tuple(m for m in messages if m["content"]), {"task": task}

    def step(self, action: str) -> tuple[tuple[Message, ...], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        self._done = True
        answer, tagged = extract_answer(action)
        info: dict[str, Any] = {"turns": 1, "answer": answer}
        try:
            correct = float(self.dataset.score_answer(answer, self.entry))
        except Exception as exc:  # noqa: BLE001 - a scorer choking on odd text scores 0
            correct = 0.0
            info["score_error"] = f"{type(exc).__name__}: {exc}"
        components = {"correct": correct, "format": float(tagged and bool(answer))}
        info["reward_components"] = components
        total = sum(self.reward_weights.get(name, 1.0) * v for name, v in components.items())
        return (), float(total), True, False, info
