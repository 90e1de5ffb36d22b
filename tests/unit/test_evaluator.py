"""The in-run evaluator's pin (orchestrator.evaluation) against a fleet stand-in:
an evaluation holds its version while a publish waits, and the off-version count
that guards it fails when the pin does not hold."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from core.config import Config
from core.evaluation import EvalTask
from core.types import Trajectory
from core.waits import WaitTimeout
from orchestrator.curriculum import TaskCounts
from orchestrator.evaluation import Evaluator

TASKS = 12


class Pool:
    """Serves an eval task's samples on whatever version the fleet has when each
    sample's (single) turn runs, a little later than it was asked for."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.run_eval = SimpleNamespace(remote=self._run_eval)

    async def _run_eval(self, task: EvalTask, kwargs: dict, temperature: float) -> list:
        await asyncio.sleep(0.01 * (task.seed % TASKS))
        samples = []
        for trajectory_id in task.episode_ids:
            t = Trajectory(trajectory_id, "g", "env", task.seed, prompt_length=1)
            t.append([1], generated=False)
            t.append([2], generated=True, logprobs=[-0.1], versions=[self.fleet.version])
            t.reward = 1.0
            samples.append(t)
        return samples


class Fleet:
    def __init__(self, pin_holds: bool = True):
        self.version = 0
        self.lock = asyncio.Lock()
        self.pin_holds = pin_holds
        self.pools = [Pool(self), Pool(self)]
        self.model_path = "unused"

    async def pin(self) -> int:
        if self.pin_holds:
            await self.lock.acquire()
        return self.version

    def unpin(self) -> None:
        if self.pin_holds:
            self.lock.release()

    async def publish(self) -> None:
        async with self.lock:
            self.version += 1

    async def worker_stats(self) -> dict:
        return {}


async def _evaluate_while_publishing(fleet: Fleet, tmp_path) -> dict[str, float]:
    cfg = Config()
    cfg.eval.every, cfg.eval.tasks = 1, TASKS
    cfg.logger.run_dir = str(tmp_path)
    evaluator = Evaluator(fleet, cfg, TaskCounts(None, None, {}), started=0.0)
    evaluator._write_samples = lambda version, episodes: None  # no tokenizer here
    await evaluator.start(0)
    await asyncio.sleep(0.02)  # some samples have run
    await fleet.publish()  # the learner's next version, while the evaluation runs
    await evaluator.wait()
    (metrics,) = evaluator.finished()
    return metrics


def test_an_evaluation_holds_its_version_until_it_ends(tmp_path):
    fleet = Fleet()
    metrics = asyncio.run(_evaluate_while_publishing(fleet, tmp_path))
    assert metrics["eval/off_version_samples"] == 0
    assert metrics["eval/tasks"] == TASKS and metrics["eval/version"] == 0
    assert fleet.version == 1  # the publish went out after it


def test_without_the_pin_the_off_version_count_shows_it(tmp_path):
    metrics = asyncio.run(_evaluate_while_publishing(Fleet(pin_holds=False), tmp_path))
    assert metrics["eval/off_version_samples"] > 0


def test_an_evaluation_past_its_timeout_stops_naming_the_wait_and_unpins():
    async def scenario() -> Fleet:
        fleet = Fleet()
        for pool in fleet.pools:
            pool.run_eval = SimpleNamespace(remote=lambda *args: asyncio.sleep(3600))
        cfg = Config()
        cfg.eval.every, cfg.eval.tasks, cfg.eval.timeout_s = 1, 2, 0.2
        evaluator = Evaluator(fleet, cfg, TaskCounts(None, None, {}), started=0.0)
        await evaluator.start(0)
        await evaluator.wait()
        with pytest.raises(WaitTimeout, match=r"the evaluation of v0 \(2 tasks; eval.timeout_s\)"):
            evaluator.finished()
        await asyncio.wait_for(fleet.publish(), 1.0)  # the pin was let go
        return fleet

    assert asyncio.run(scenario()).version == 1


def test_evaluations_that_end_between_two_reports_are_all_reported(tmp_path):
    """An odd first version, then an even one (eval.every=2): the first evaluation has
    ended when the second starts, and neither is lost."""

    async def scenario() -> list[dict]:
        fleet = Fleet()
        fleet.version = 5
        cfg = Config()
        cfg.eval.every, cfg.eval.tasks = 2, 3
        evaluator = Evaluator(fleet, cfg, TaskCounts(None, None, {}), started=0.0)
        evaluator._write_samples = lambda version, episodes: None
        await evaluator.start(5)
        await fleet.publish()  # waits for the first evaluation to end
        assert evaluator.due(6)
        await evaluator.start(6)
        return await evaluator.final(6)

    assert [m["eval/version"] for m in asyncio.run(scenario())] == [5, 6]
