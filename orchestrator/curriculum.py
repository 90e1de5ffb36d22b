"""Which task the producer starts next: the task samplers and the curriculum.

An env that draws a new task from every seed (the procedural envs) gets seeds in
order (`SequentialSeeds`). An env with a finite task set (`num_tasks`, a dataset
env: the task of seed s is row s % num_tasks) gets `TaskSet`: every task once per
epoch in a shuffled order, a task's k-th issue under seed k * num_tasks + row (so
every group keeps a run-unique seed). With `curriculum.enabled`, `TaskSet` also
tracks each task's pass rate from its finished groups and retires, before they are
rolled out again, tasks that are always solved or never solved (the bounds are
config), and gives tasks retired as unsolvable another chance after
`curriculum.retry_unsolvable_epochs` epochs (the policy has moved since);
`curriculum.weighting=mid` draws the active tasks with weight p(1-p) instead. Its
whole state (counts, retirements, position, RNG) goes into run checkpoints, so a
resumed run samples in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from core.config import Config, ConfigError, CurriculumConfig
from core.evaluation import held_out_kwargs, solved
from core.types import Group
from envs import make_env


class CurriculumExhausted(RuntimeError):
    """Every task is retired: nothing is left to train on."""


class TaskSampler(Protocol):
    def next_seed(self) -> int: ...

    def record(self, group: Group) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, float]: ...


class SequentialSeeds:
    """Seeds trainer.seed * 1e6, +1, ...: a new task each (procedural envs)."""

    def __init__(self, first: int):
        self.next = first

    def next_seed(self) -> int:
        seed, self.next = self.next, self.next + 1
        return seed

    def record(self, group: Group) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"next_seed": self.next}

    def stats(self) -> dict[str, float]:
        return {}


class TaskSet:
    """A finite task set walked in shuffled epochs, optionally as a curriculum."""

    def __init__(
        self,
        num_tasks: int,
        cfg: CurriculumConfig,
        group_size: int,
        seed: int,
        success_reward: float = 1.0,
    ):
        self.n = num_tasks
        self.cfg = cfg
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self.issued = np.zeros(num_tasks, dtype=np.int64)
        self.groups = np.zeros(num_tasks, dtype=np.int64)
        self.samples = np.zeros(num_tasks, dtype=np.int64)
        self.passes = np.zeros(num_tasks, dtype=np.int64)
        self.retired: dict[int, str] = {}
        """Row -> "solved" | "unsolvable"."""
        self.retired_epoch: dict[int, int] = {}
        """Row -> the epoch it was retired in."""
        self.retried = 0
        self.draws = 0
        self.rollouts_saved = 0.0
        self.success_reward = success_reward
        self.rng = np.random.default_rng([seed, 1])

    # -- what the producer calls ------------------------------------------------------

    def next_seed(self) -> int:
        self._retry_unsolvable()
        self._check_left()
        row = self._draw_weighted() if self.cfg.weighting == "mid" else self._walk()
        seed = int(self.issued[row]) * self.n + row
        self.issued[row] += 1
        self.draws += 1
        return seed

    def record(self, group: Group) -> None:
        """Count a finished group toward its task's pass rate; retire the task when
        the curriculum's bounds say so."""
        row = group.task_seed % self.n
        done = [t for t in group.trajectories if t.status.trainable]
        if not done:
            return
        self.groups[row] += 1
        self.samples[row] += len(done)
        self.passes[row] += sum(solved(t, self.success_reward) for t in done)
        if self.cfg.enabled and row not in self.retired and self.groups[row] >= self.cfg.min_groups:
            rate = self.passes[row] / self.samples[row]
            if rate >= self.cfg.retire_solved_at:
                self.retired[row], self.retired_epoch[row] = "solved", self.epoch
            elif rate <= self.cfg.retire_unsolved_at:
                self.retired[row], self.retired_epoch[row] = "unsolvable", self.epoch

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "issued": self.issued.tolist(),
            "groups": self.groups.tolist(),
            "samples": self.samples.tolist(),
            "passes": self.passes.tolist(),
            "retired": dict(self.retired),
            "retired_epoch": dict(self.retired_epoch),
            "retried": self.retried,
            "draws": self.draws,
            "rollouts_saved": self.rollouts_saved,
            "rng": self.rng.bit_generator.state,
        }

    def restore(self, state: dict[str, Any]) -> None:
        if len(state["issued"]) != self.n:
            raise ValueError(
                f"the checkpoint's task set has {len(state['issued'])} tasks, the env "
                f"{self.n}: resume with the dataset the run started with"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        for name in ("issued", "groups", "samples", "passes"):
            setattr(self, name, np.asarray(state[name], dtype=np.int64))
        self.retired = {int(row): why for row, why in state["retired"].items()}
        self.retired_epoch = {int(row): int(e) for row, e in state["retired_epoch"].items()}
        self.retried, self.draws = int(state["retried"]), int(state["draws"])
        self.rollouts_saved = float(state["rollouts_saved"])
        self.rng.bit_generator.state = state["rng"]

    def stats(self) -> dict[str, float]:
        kinds = list(self.retired.values())
        return {
            "curriculum/tasks": float(self.n),
            "curriculum/active": float(self.n - len(kinds)),
            "curriculum/retired_solved": float(kinds.count("solved")),
            "curriculum/retired_unsolvable": float(kinds.count("unsolvable")),
            "curriculum/rollouts_saved": self.rollouts_saved,
            "curriculum/retried": float(self.retried),
            "curriculum/epoch": float(self.epoch),
        }

    # -- drawing ------------------------------------------------------------------------

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0, epoch]).permutation(self.n)

    def _walk(self) -> int:
        """The next task of the shuffled epoch that is not retired; a retired one
        passed over saves a group's rollouts."""
        while True:
            if self.position >= self.n:
                self.epoch, self.position = self.epoch + 1, 0
                self._retry_unsolvable()
            row = int(self._order(self.epoch)[self.position])
            self.position += 1
            if row not in self.retired:
                return row
            self.rollouts_saved += self.group_size

    def _draw_weighted(self) -> int:
        """An active task, with weight p(1-p) on its posterior mean pass rate; the
        retired tasks' share of a uniform draw counts as saved."""
        active = np.array([r for r in range(self.n) if r not in self.retired])
        rate = (self.passes[active] + 1) / (self.samples[active] + 2)
        weights = rate * (1 - rate)
        row = int(self.rng.choice(active, p=weights / weights.sum()))
        self.rollouts_saved += self.group_size * len(self.retired) / self.n
        self.epoch = (self.draws + 1) // self.n  # draws of n tasks make an epoch here
        return row

    def _retry_unsolvable(self) -> None:
        """Tasks retired as unsolvable curriculum.retry_unsolvable_epochs epochs ago
        (or as soon as nothing else is left) come back with their counts cleared: the
        policy has moved since they were judged."""
        after = self.cfg.retry_unsolvable_epochs
        if not after:
            return
        nothing_left = len(self.retired) == self.n
        due = [
            row
            for row, why in self.retired.items()
            if why == "unsolvable"
            and (nothing_left or self.epoch - self.retired_epoch[row] >= after)
        ]
        for row in due:
            del self.retired[row], self.retired_epoch[row]
            self.groups[row] = self.samples[row] = self.passes[row] = 0
        self.retried += len(due)

    def _check_left(self) -> None:
        if len(self.retired) < self.n:
            return
        kinds = list(self.retired.values())
        raise CurriculumExhausted(
            f"every one of the {self.n} tasks is retired ({kinds.count('solved')} as solved, "
            f"{kinds.count('unsolvable')} as unsolvable): nothing is left to train on; widen "
            "curriculum.retire_solved_at / retire_unsolved_at, raise curriculum.min_groups, "
            "or let unsolvable tasks be retried (curriculum.retry_unsolvable_epochs)"
        )


def task_sampler(cfg: Config, num_tasks: int | None, resume: Any = None) -> TaskSampler:
    """The sampler for the run's env: TaskSet when it has a finite task set, else
    SequentialSeeds; where a checkpoint's ControllerState left them when resuming."""
    if num_tasks is None:
        return SequentialSeeds(resume.next_seed if resume else cfg.trainer.seed * 1_000_000)
    env = cfg.env
    tasks = TaskSet(num_tasks, cfg.curriculum, env.group_size, cfg.trainer.seed, env.success_reward)
    saved = getattr(resume, "tasks", None)  # checkpoints older than the sampler have none
    if saved:
        tasks.restore(saved)
    return tasks


@dataclass(frozen=True)
class TaskCounts:
    """Finite task counts of the training env and the held-out env (None: the env
    draws a new task from every seed)."""

    train: int | None
    held_out: int | None
    held_out_kwargs: dict[str, Any]
    """The held-out env's kwargs (core.evaluation.held_out_kwargs)."""


def task_counts(cfg: Config) -> TaskCounts:
    """Build the training env (and the held-out one when evaluation is on) to count
    their tasks; a curriculum on an env without a finite task set is refused."""
    env = make_env(cfg.env.id, cfg.env.kwargs)
    try:
        train, kwargs = _count(env), held_out_kwargs(cfg, env)
        held_out = None
        if cfg.eval.every:
            held_out_env = make_env(cfg.env.id, kwargs)
            held_out = _count(held_out_env)
            held_out_env.close()
    finally:
        env.close()
    if cfg.curriculum.enabled and train is None:
        raise ConfigError(
            f"curriculum.enabled needs an env with a finite task set (env=dataset); "
            f"{cfg.env.id} draws a new task from every seed"
        )
    return TaskCounts(train, held_out, kwargs)


def _count(env: Any) -> int | None:
    n = getattr(env, "num_tasks", None)
    return int(n) if n is not None else None
