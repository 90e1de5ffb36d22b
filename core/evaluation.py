"""What an evaluation is, apart from who runs it: the held-out tasks, their episode
ids, and the scores (accuracy, pass@k, mean reward) of the finished episodes.

The in-run evaluator (orchestrator.evaluation) and the direct evaluation of a saved
policy (rollout.evaluate) both plan with `plan` and score with `summarize`, so the
two give the same numbers for the same policy, tasks and seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import comb
from typing import Any

from core.config import Config
from core.types import Trajectory

EVAL_PREFIX = "eval"
"""Evaluation episode ids start with it: `eval/v<version>/t<seed>/<sample>`."""


@dataclass(frozen=True)
class EvalTask:
    seed: int
    episode_ids: tuple[str, ...]


def held_out_kwargs(cfg: Config, env: Any) -> dict[str, Any]:
    """The held-out env's kwargs: env.kwargs, with `split: eval` for an env that has
    splits (a dataset env), then eval.env_kwargs over them."""
    kwargs = dict(cfg.env.kwargs)
    if hasattr(env, "split"):
        kwargs["split"] = "eval"
    return kwargs | dict(cfg.eval.env_kwargs)


def plan(cfg: Config, version: int, num_tasks: int | None) -> list[EvalTask]:
    """The held-out tasks of one evaluation of `version`: rows 0.. of the eval split
    (an env with `num_tasks`), else seeds eval.first_seed, ...; eval.samples each."""
    ev = cfg.eval
    if num_tasks is None:
        seeds = range(ev.first_seed, ev.first_seed + ev.tasks)
    else:
        seeds = range(min(ev.tasks, num_tasks) if ev.tasks else num_tasks)
    return [
        EvalTask(seed, tuple(f"{EVAL_PREFIX}/v{version}/t{seed}/{i}" for i in range(ev.samples)))
        for seed in seeds
    ]


def is_eval_id(trajectory_id: str) -> bool:
    return trajectory_id.startswith(EVAL_PREFIX + "/")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def solved(trajectory: Trajectory, success_reward: float) -> bool:
    """A sample the model finished (or ran out of turns or tokens on) with a reward
    of at least `success_reward`."""
    return trajectory.status.trainable and trajectory.reward >= success_reward


def sample_records(
    episodes: Sequence[Sequence[Trajectory]], success_reward: float
) -> list[dict[str, Any]]:
    """One record per sample, in plan order: its task seed, sample index, status,
    reward, whether it solved the task, and the token ids after the prompt."""
    return [
        {
            "seed": t.task_seed,
            "sample": index,
            "status": str(t.status),
            "reward": t.reward,
            "solved": solved(t, success_reward),
            "completion_ids": t.tokens[t.prompt_length :],
        }
        for task in episodes
        for index, t in enumerate(task)
    ]


def summarize(
    episodes: Sequence[Sequence[Trajectory]], success_reward: float, ks: Sequence[int]
) -> dict[str, float]:
    """`eval/*` of one evaluation: per task (a sequence of its samples), accuracy
    (solved samples over all), pass@k averaged over tasks, mean reward, and how many
    episodes the environment or the engine failed (scored as unsolved; truncated ones
    are the model's own failures)."""
    samples = [t for task in episodes for t in task]
    if not samples:
        return {}
    passed = [sum(solved(t, success_reward) for t in task) for task in episodes]
    metrics = {
        "eval/tasks": float(len(episodes)),
        "eval/samples": float(len(samples)),
        "eval/accuracy": sum(passed) / len(samples),
        "eval/mean_reward": sum(t.reward for t in samples) / len(samples),
        "eval/failed": float(sum(not t.status.trainable for t in samples)),
    }
    for k in ks:
        scores = [pass_at_k(len(task), c, k) for task, c in zip(episodes, passed, strict=True)]
        metrics[f"eval/pass@{k}"] = sum(scores) / len(scores)
    return metrics
