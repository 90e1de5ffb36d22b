"""Evaluation during training: held-out tasks run on the rollout workers against a
pinned policy version, beside training.

An evaluation of version v starts once v is on every rollout worker (before the
first step, at a resume, every eval.every versions, after the last step). It pins
v (the fleet's publish waits for it), so every one of its turns is served by v,
while the learner trains on: in async mode the next version's publish waits in
the background, in sync mode the loop waits between steps. Its episodes go
through the env pools and their routers like any other, under `eval/...` ids,
and come back to the evaluator only: never the ledger, the buffer or the
learner. Scores are core.evaluation's; every sample (seed, reward, completion) is
written to <run_dir>/eval/v<version>.jsonl; its cost is logged as `eval/seconds`,
`eval/rollout_share` (tokens it generated over all generated
while it ran).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from core.chat import load_tokenizer
from core.config import Config
from core.evaluation import EvalTask, plan, sample_records, summarize
from core.types import Trajectory
from core.waits import bounded
from orchestrator.curriculum import TaskCounts
from orchestrator.fleet import Fleet

log = logging.getLogger(__name__)


class Evaluator:
    def __init__(
        self,
        fleet: Fleet,
        cfg: Config,
        tasks: TaskCounts,
        started: float,
    ):
        self.fleet = fleet
        self.cfg = cfg
        self.tasks = tasks
        self.started = started
        """time.perf_counter() when the loop started (eval/elapsed_s counts from it)."""
        self.evaluated: set[int] = set()
        self._running: asyncio.Task | None = None
        self._ended: list[dict[str, float]] = []
        """Metrics of evaluations that ended and were not yet handed out."""
        self._tokenizer: Any = None

    def due(self, version: int, first: bool = False) -> bool:
        """Whether `version` is to be evaluated: the first version the loop sees, every
        eval.every-th, and (see `final`) the last."""
        every = self.cfg.eval.every
        return bool(every) and version not in self.evaluated and (first or version % every == 0)

    async def start(self, version: int) -> None:
        """Pin `version` (on every worker now) and evaluate it in the background;
        `finished` gives its metrics once it has ended. One evaluation at a time."""
        await self.wait()
        self._collect()
        pinned = await self.fleet.pin()
        if pinned != version:
            self.fleet.unpin()
            raise RuntimeError(f"evaluation of v{version} found v{pinned} on the workers")
        self.evaluated.add(version)
        self._running = asyncio.create_task(self._evaluate_pinned(version))

    def finished(self) -> list[dict[str, float]]:
        """The metrics of every evaluation that has ended since the last call, in order."""
        self._collect()
        ended, self._ended = self._ended, []
        return ended

    def _collect(self) -> None:
        """Keep the metrics of the evaluation that has just ended (raises its error)."""
        if self._running is not None and self._running.done():
            task, self._running = self._running, None
            self._ended.append(task.result())

    async def wait(self) -> None:
        """Wait for the evaluation under way, if any (`finished` then has its metrics)."""
        if self._running is not None and not self._running.done():
            log.info("waiting for the evaluation under way")
            await asyncio.wait({self._running})

    async def final(self, version: int) -> list[dict[str, float]]:
        """The evaluations still to report, the last version's included if evaluation
        is on and it was not evaluated; waits for them."""
        if self.cfg.eval.every and version not in self.evaluated:
            await self.start(version)
        await self.wait()
        return self.finished()

    def cancel(self) -> None:
        if self._running is not None:
            self._running.cancel()

    # -- one evaluation -------------------------------------------------------------------

    async def _evaluate_pinned(self, version: int) -> dict[str, float]:
        started = time.perf_counter()
        engines_before = await self._engine_tokens()
        try:
            plan_ = plan(self.cfg, version, self.tasks.held_out)
            episodes = await bounded(
                self._run_tasks(plan_),
                self.cfg.eval.timeout_s,
                f"the evaluation of v{version} ({len(plan_)} tasks; eval.timeout_s)",
            )
        finally:
            self.fleet.unpin()
        seconds = time.perf_counter() - started
        await asyncio.to_thread(self._write_samples, version, episodes)
        metrics = summarize(episodes, self.cfg.env.success_reward, self.cfg.eval.pass_k)
        metrics |= _cost(episodes, await self._engine_tokens() - engines_before, seconds)
        metrics |= {
            "eval/version": float(version),
            "eval/off_version_samples": float(_off_version(episodes, version)),
            "eval/elapsed_s": time.perf_counter() - self.started,
        }
        if failures := [t.failure for task in episodes for t in task if t.failure]:
            log.warning(
                "eval v%d: %d episodes failed (scored unsolved); first: %s",
                version,
                len(failures),
                failures[0],
            )
        log.info(
            "eval v%d: accuracy %.3f, mean reward %.3f over %d tasks (%.1fs, %.0f%% of tokens)",
            version,
            metrics.get("eval/accuracy", 0.0),
            metrics.get("eval/mean_reward", 0.0),
            len(episodes),
            seconds,
            100 * metrics["eval/rollout_share"],
        )
        return metrics

    def _write_samples(self, version: int, episodes: list[list[Trajectory]]) -> Path:
        """<run_dir>/eval/v<version>.jsonl: every sample's record and its completion as
        text, to read what the policy answered."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.fleet.model_path)
        path = Path(self.cfg.logger.run_dir) / "eval" / f"v{version}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for record in sample_records(episodes, self.cfg.env.success_reward):
                record["completion"] = self._tokenizer.decode(record["completion_ids"])
                out.write(json.dumps(record) + "\n")
        return path

    async def _engine_tokens(self) -> int:
        """Tokens the rollout engines have generated so far, for anyone."""
        stats = await self.fleet.worker_stats()
        return sum(s.generated_tokens for s in stats.values())

    async def _run_tasks(self, tasks: list[EvalTask]) -> list[list[Trajectory]]:
        """Every task on an env pool (round robin); a task whose pool died is tried
        once more on the next one, then left out (logged, and eval/tasks shows it)."""
        pools = self.fleet.pools
        runs = [self._run_task(task, index, len(pools)) for index, task in enumerate(tasks)]
        results = await asyncio.gather(*runs)
        return [episodes for episodes in results if episodes is not None]

    async def _run_task(self, task: EvalTask, index: int, num_pools: int) -> Any:
        import ray

        ev, kwargs = self.cfg.eval, self.tasks.held_out_kwargs
        for attempt in range(2):
            pool = self.fleet.pools[(index + attempt) % num_pools]
            try:
                return await pool.run_eval.remote(task, kwargs, ev.temperature)
            except ray.exceptions.RayActorError as exc:
                log.warning("evaluation task %d: env pool lost (%s)", task.seed, exc)
        return None


def _cost(episodes: list[list[Trajectory]], engine_tokens: int, seconds: float) -> dict:
    """Seconds, tokens, and the share of the tokens the engines generated while the
    evaluation ran that were the evaluation's (training rollouts had the rest)."""
    tokens = sum(t.num_generated for task in episodes for t in task)
    return {
        "eval/seconds": seconds,
        "eval/tokens": float(tokens),
        "eval/rollout_share": min(1.0, tokens / max(1, engine_tokens)),
    }


def _off_version(episodes: list[list[Trajectory]], version: int) -> int:
    """Samples with a generated token from another version than the pinned one (0
    unless the pin failed)."""
    return sum(any(v != version for v in t.generated_versions) for task in episodes for t in task)
