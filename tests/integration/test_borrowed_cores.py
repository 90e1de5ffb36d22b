"""The async learner borrows the rollout engine's core while the engine idles
(learner.borrow_idle_cores), on the real system: one vLLM worker bound to one
core, one DeepSpeed rank bound to the other, a learner step longer than the
generation it overlaps (small micro-batches), so the engine finishes the next
batch and idles while the learner still trains.

What shows it: a rank pinned to one core cannot spend more CPU time than wall
time; on the steps where it borrowed, its process spent well over one core's
worth (`perf/learner_cores_busy`), and on the others it stayed within one. After
each step the rank is back on its own core (a borrow never outlives its step).
"""

from __future__ import annotations

import copy

import pytest

from core.config import LoggerConfig
from core.metrics import MetricsLogger
from orchestrator.controller import train
from tests.integration.conftest import small_run_config

STEPS = 6
ONE_CORE = 1.05
"""CPU seconds per wall second a process bound to one core can reach (measurement slack)."""


@pytest.fixture(scope="module")
def borrowing_system(ray_cluster, tiny_policy, tmp_path_factory, event_loop_runner):
    from orchestrator.system import System

    cfg = small_run_config(
        tmp_path_factory.mktemp("borrow-run"),
        trainer__total_steps=STEPS,
        rollout__num_workers=1,
        rollout__max_tokens_per_turn=16,
        learner__micro_batch_tokens=96,
        env__kwargs={"max_turns": 1, "max_operands": 2, "max_value": 9, "operators": "+"},
    )
    cfg.env.num_pools = 1
    cfg.trainer.mode = "async"
    system = event_loop_runner(System.start(cfg, tiny_policy))
    yield system, cfg
    event_loop_runner(system.shutdown())


def test_the_learner_runs_on_the_idle_engines_core_and_gives_it_back(
    borrowing_system, event_loop_runner, tmp_path
):
    system, cfg = borrowing_system
    own = set(_learner_cores(system, event_loop_runner))
    assert len(own) == 1, f"the rank should be pinned to one core, not {own}"

    logger = MetricsLogger(LoggerConfig(run_dir=str(tmp_path), plot_every=0))
    logger.cfg.wandb.enabled = False
    state = event_loop_runner(train(system, cfg, logger))
    logger.close()

    steps = [(h["perf/learner_borrowed_s"], h["perf/learner_cores_busy"]) for h in state.history]
    borrowed = [busy for seconds, busy in steps if seconds > 0.05]
    alone = [busy for seconds, busy in steps if seconds == 0.0]
    assert borrowed, f"no step borrowed the engine's core: {steps}"
    assert max(borrowed) > 1.2, f"borrowing steps stayed on one core: {steps}"
    assert all(busy <= ONE_CORE for busy in alone), f"a step used two cores unlent: {steps}"
    assert set(_learner_cores(system, event_loop_runner)) == own


def _learner_cores(system, runner) -> tuple[int, ...]:
    """The cores every thread of rank 0's process may run on now (their union)."""
    return runner(system.learner.group.ranks[0].thread_cores.remote())


def test_a_sync_run_of_the_same_shape_is_pinned_by_its_own_mode(borrowing_system):
    """Runs of one shape share a reservation (placement groups), not their pins."""
    from orchestrator import actors
    from orchestrator.placement import plan

    _, cfg = borrowing_system
    sync = copy.deepcopy(cfg)
    sync.trainer.mode = "sync"
    assert plan(sync) == plan(cfg)
    reservation = actors.reserve(sync)
    assert reservation is actors.reserve(cfg)
    overlapping, taking_turns = reservation.cores(cfg), reservation.cores(sync)
    assert len(overlapping.learner[0]) == 1 and overlapping.learner_spare[0] == (
        overlapping.rollout[0],
    )
    # sync: the rank has every core, the engine's too, and nothing to borrow
    assert set(taking_turns.learner[0]) >= {*overlapping.learner[0], overlapping.rollout[0]}
    assert taking_turns.learner_spare == [()]
