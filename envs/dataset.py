"""Dataset-v0: the rows of a question/answer dataset as chat episodes, tools optional.

Owns turning rows into episodes: the opening messages, the tools the model may
call, the turn limit and the reward. Reading, checking, caching and splitting
the rows is envs/dataset_rows.py's. With no `path` the dataset is the shipped
envs/data/arithmetic.jsonl (`python -m envs.data.make_math_dataset` writes it).

The seed -> row contract (a curriculum sampler relies on it, picking seeds
`k * num_tasks + row`):

- `num_tasks` is the number of rows in the chosen split;
- `reset(seed=s)` poses row `s % num_tasks` of the split, rows in file order
  (files in the order given); `task_key(s)` is that row and `task["row"]` says it;
- `reset()` without a seed draws one from the env's `np_random`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from envs import EnvConfigError
from envs.base import Message, Tool, ToolEnv
from envs.dataset_rows import Keys, Row, as_paths, load_rows, split_error, split_rows
from rewards import RewardConfigError, RewardSpec

SHIPPED = Path(__file__).resolve().parent / "data" / "arithmetic.jsonl"
ANSWER_FORMAT = "give the final answer as <answer>number</answer>."
"""The calculator env's wording, which the tiny test policy was warmed up on."""
DEFAULT_WEIGHTS = {"correct": 1.0, "format": 0.1}
SPLITS = ("train", "eval")


def _calculator() -> Tool:
    from envs.tools.calculator import Calculator

    return Calculator()


def _python() -> Tool:
    from envs.tools.python import PythonTool

    return PythonTool()


TOOLS: dict[str, tuple[Callable[[], Tool], str]] = {
    "calculator": (_calculator, "the calculator tool for arithmetic"),
    "python": (_python, "the python tool to run code"),
}
"""Tools a dataset env can hand the model, by name: (factory, how the system prompt
names it). The search tools need a corpus, so they belong to Search-v0."""


def default_system_prompt(tools: Sequence[str]) -> str:
    """Without tools, "solve it"; with the calculator alone, the calculator env's
    own system prompt, word for word."""
    if not tools:
        return f"You are a careful assistant. Solve the problem, then {ANSWER_FORMAT}"
    uses = " and ".join(TOOLS[name][1] for name in tools)
    return f"You are a careful assistant. Use {uses}, then {ANSWER_FORMAT}"


class DatasetEnv(ToolEnv):
    """One row of a dataset per episode: its prompt as the user message, its answer
    scored by `reward_fn` (seeds map to rows as the module docstring says).

    Args:
        path: a file or a list of files, each JSONL (`.jsonl`, one object a line),
            Parquet (`.parquet`, needs pyarrow) or `hf:<name>[:<config>][@<split>]`
            (a Hugging Face dataset already in the local cache; never downloaded).
            A relative path is looked up from the current directory, then from the
            repository root. None: the shipped arithmetic set.
        prompt_key: the field holding the question (`a.b` reaches a nested field).
        answer_key: the field holding the answer (text or a number).
        system_prompt: the system message; None: one asking for the final answer as
            <answer>number</answer> (naming the tools, if any); "" for none.
        tools: names of tools the model may call (`calculator`, `python`); none by default.
        where: keep only the rows whose fields have these values (`{kind: word}`;
            a list value keeps any of its values), e.g. a subset of a dataset.
        split: "train" or "eval".
        eval_fraction: the share of distinct prompts in the eval split.
        split_seed: which prompts those are (a hash of the seed and the prompt).
        reward_fn: a reward name from rewards.REWARDS (`math_verify` for math), a
            dotted path or a composed mapping.
        reward_weights: the weight of each reward component; None: correct 1, format 0.1.
        max_turns: assistant turns per episode; None: 1, or 3 with tools.
        tool_timeout_s: a tool call's time limit.
        tool_retries: retries of a tool that crashed or timed out.

    Rows whose fields are missing, empty or of the wrong type are skipped with a
    warning that names their file and line. The task dict holds the row's other
    fields, then "question", "answer" (as text), "row" (its index in the split)
    and "source" (`file:line`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Sequence[str] | None = None,
        prompt_key: str = "question",
        answer_key: str = "answer",
        system_prompt: str | None = None,
        tools: Sequence[str] = (),
        where: dict[str, Any] | None = None,
        split: Literal["train", "eval"] = "train",
        eval_fraction: float = 0.1,
        split_seed: int = 0,
        reward_fn: RewardSpec = "numeric_match",
        reward_weights: dict[str, float] | None = None,
        max_turns: int | None = None,
        tool_timeout_s: float = 10.0,
        tool_retries: int = 1,
    ):
        self.tool_names = _check_options(tools, split, eval_fraction, max_turns)
        self.paths = [str(SHIPPED)] if path is None else as_paths(path)
        self.split = split
        keys = Keys(prompt_key, answer_key)
        self.rows = _split_of(self.paths, keys, where or {}, split, eval_fraction, split_seed)
        if system_prompt is None:
            system_prompt = default_system_prompt(self.tool_names)
        self.system_prompt = system_prompt
        weights = dict(DEFAULT_WEIGHTS) if reward_weights is None else reward_weights
        turns = max_turns if max_turns is not None else (3 if self.tool_names else 1)
        self._seed: int | None = None
        try:
            super().__init__(reward_fn, weights, turns, tool_timeout_s, tool_retries)
        except RewardConfigError as exc:
            raise EnvConfigError(f"env.kwargs.reward_fn: {exc}") from exc

    # -- the seed -> row contract -------------------------------------------------

    @property
    def num_tasks(self) -> int:
        """Rows in the chosen split."""
        return len(self.rows)

    def task_key(self, seed: int) -> int:
        """The row that `reset(seed=seed)` poses."""
        return seed % self.num_tasks

    def task_at(self, row: int) -> dict[str, Any]:
        """The task of row `row` of the split."""
        found: Row = self.rows[row]
        task = dict(found.extra)
        task.update(question=found.prompt, answer=found.answer, row=row, source=found.source)
        return task

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[Message, ...], dict[str, Any]]:
        self._seed = seed  # sample_task maps it to its row
        return super().reset(seed=seed, options=options)

    # -- ToolEnv ------------------------------------------------------------------

    def sample_task(self, rng: np.random.Generator) -> dict[str, Any]:
        seed = self._seed if self._seed is not None else int(rng.integers(0, 2**63 - 1))
        return self.task_at(self.task_key(seed))

    def opening_messages(self, task: dict[str, Any]) -> list[Message]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": task["question"]}]

    def make_tools(self) -> list[Tool]:
        return [TOOLS[name][0]() for name in self.tool_names]


def _check_options(
    tools: Sequence[str], split: str, eval_fraction: float, max_turns: int | None
) -> tuple[str, ...]:
    """The tool names, once the options are known to make sense (EnvConfigError if not)."""
    if isinstance(tools, str):
        tools = [tools]
    unknown = [name for name in tools if name not in TOOLS]
    if unknown:
        raise EnvConfigError(
            f"env.kwargs.tools: unknown tool(s) {unknown}; a dataset env offers {sorted(TOOLS)}"
        )
    if split not in SPLITS:
        raise EnvConfigError(f"env.kwargs.split={split!r}: use 'train' or 'eval'")
    if not 0.0 <= eval_fraction <= 1.0:
        raise EnvConfigError(f"env.kwargs.eval_fraction={eval_fraction}: use a share in [0, 1]")
    if max_turns is not None and max_turns < 1:
        raise EnvConfigError(f"env.kwargs.max_turns={max_turns}: an episode needs a turn")
    return tuple(tools)


def _matching(rows: tuple[Row, ...], where: dict[str, Any]) -> tuple[Row, ...]:
    """The rows whose fields hold the values `where` asks for (a list: any of them)."""
    if not where:
        return rows
    wanted = {k: list(v) if isinstance(v, list | tuple) else [v] for k, v in where.items()}
    kept = tuple(r for r in rows if all(r.extra.get(k) in vs for k, vs in wanted.items()))
    if not kept:
        fields = sorted({k for r in rows[:100] for k in r.extra})
        raise EnvConfigError(
            f"env.kwargs.where={where}: no row matches (the rows' fields: {', '.join(fields)})"
        )
    return kept


def _split_of(
    paths: list[str],
    keys: Keys,
    where: dict[str, Any],
    split: str,
    eval_fraction: float,
    split_seed: int,
) -> tuple[Row, ...]:
    rows = _matching(load_rows(paths, keys), where)
    chosen = split_rows(rows, split, eval_fraction, split_seed)
    if not chosen:
        label = "[" + ",".join(paths) + "]" if len(paths) > 1 else paths[0]
        if paths == [str(SHIPPED)]:
            label = "null (the shipped envs/data/arithmetic.jsonl)"
        raise EnvConfigError(split_error(label, split, len(rows), eval_fraction, split_seed))
    return chosen
