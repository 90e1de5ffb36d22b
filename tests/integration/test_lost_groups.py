"""Groups that vanish while their pool stays alive, on the shared real system.

A FaultyPool (a real EnvPool actor on the real vLLM workers) hangs on its first
group and drops a member of its second. Both are declared lost (the hung one at
supervisor.group_deadline_s, the short one on arrival), logged, counted and run
again, and the run ends with nothing unaccounted. Sync mode makes it strict: a
batch needs exactly its groups, so a lost group that is not re-run stalls the
run, and a sync run ends with nothing in flight or waiting (produced == trained
+ lost). With the booking of lost groups switched off, the audit fires.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from core.config import Config, EnvConfig, LoggerConfig
from core.metrics import MetricsLogger
from orchestrator.assembly import RunState
from orchestrator.controller import train
from orchestrator.ledger import Ledger
from tests.integration.faulty_pools import faulty_pool

SCRIPTED = "tests.integration.scripted_turns:ScriptedTurnsEnv"
DEADLINE_S = 6.0
FAULTS = ("hang", "drop")
UNTRAINED = ("failed", "rerun", "lost", "filtered", "dropped_stale", "evicted")


def _sync_config(shared: Config, run_dir: Path, steps: int) -> Config:
    cfg = copy.deepcopy(shared)
    cfg.trainer.mode = "sync"
    cfg.trainer.total_steps = steps
    cfg.trainer.batch_timeout_s = 60.0  # a lost group never re-run fails in a minute
    cfg.trainer.checkpoint_every = 0
    cfg.logger.run_dir = str(run_dir)
    cfg.env = EnvConfig(
        id=SCRIPTED,
        kwargs={"turns": 1},
        group_size=shared.env.group_size,
        episode_timeout_s=DEADLINE_S - 1,
    )
    cfg.supervisor.group_deadline_s = DEADLINE_S
    cfg.supervisor.health_timeout_s = 5.0
    return cfg


def _train_with_faults(system: Any, cfg: Config, runner: Any) -> RunState:
    """Train on one FaultyPool in place of the system's pools (put back after)."""
    import ray

    saved = list(system.fleet.pools)
    system.fleet.pools[:] = [faulty_pool(system, cfg.env, FAULTS)]
    logger = MetricsLogger(LoggerConfig(run_dir=cfg.logger.run_dir, plot_every=0))
    logger.cfg.wandb.enabled = False
    try:
        return runner(train(system, cfg, logger))
    finally:
        logger.close()
        for pool in system.fleet.pools:
            ray.kill(pool)
        system.fleet.pools[:] = saved


def _groups_in(states: dict[str, str], state: str) -> set[str]:
    return {t.rsplit("/", 1)[0] for t, s in states.items() if s == state}


def test_hung_and_short_groups_are_lost_logged_counted_and_rerun(
    running_system, event_loop_runner, tmp_path, caplog
):
    system, shared = running_system
    cfg = _sync_config(shared, tmp_path, steps=3)
    with caplog.at_level(logging.WARNING, logger="orchestrator.producer"):
        state = _train_with_faults(system, cfg, event_loop_runner)

    size, per_batch = cfg.env.group_size, cfg.buffer.groups_per_batch
    assert len(state.history) == cfg.trainer.total_steps
    last = state.history[-1]
    assert last["fault/groups_lost"] == 2 and last["ledger/lost"] == 2 * size
    lines = [r.getMessage() for r in caplog.records if "lost after waiting" in r.getMessage()]
    hung = [line for line in lines if "group_deadline_s" in line]
    short = [line for line in lines if "missing" in line]
    assert len(hung) == 1 and len(short) == 1, lines
    assert "pool-0" in hung[0] and "pool-0" in short[0]
    lost = _groups_in(state.ledger["states"], "lost")
    assert len(lost) == 2 and all(group in hung[0] + short[0] for group in lost)
    trained_groups = {r.trajectory_id.rsplit("/", 1)[0] for r in state.trained}
    assert {f"{group}.l1" for group in lost} <= trained_groups  # run again, and trained

    assert state.audit is not None and state.audit.balanced
    assert last["ledger/unaccounted"] == 0 and last["ledger/balanced"] == 1.0
    # Sync mode produces exactly what it trains (issue 19): nothing left in flight or
    # waiting, every produced trajectory trained or accounted as never to be.
    counts = Counter(state.ledger["states"].values())
    assert counts["in_flight"] == 0 and counts["buffered"] == 0
    produced = len(state.ledger["states"])
    assert counts["trained"] == produced - sum(counts[s] for s in UNTRAINED)
    assert counts["trained"] == len(state.trained) == cfg.trainer.total_steps * per_batch * size


def test_the_audit_fires_when_lost_groups_are_not_booked(
    running_system, event_loop_runner, tmp_path, monkeypatch
):
    """The producer still declares and re-runs the groups, but the ledger keeps
    their trajectories in flight: nobody will bring them back."""
    system, shared = running_system
    cfg = _sync_config(shared, tmp_path, steps=1)
    monkeypatch.setattr(Ledger, "lost", lambda self, trajectory_ids: None)
    state = _train_with_faults(system, cfg, event_loop_runner)

    last = state.history[-1]
    size = cfg.env.group_size
    assert last["fault/groups_lost"] == 2
    assert last["ledger/unaccounted"] == 2 * size and last["ledger/balanced"] == 0.0
    assert state.audit is not None and len(state.audit.orphaned) == 2 * size
    assert _groups_in(state.ledger["states"], "in_flight") == {
        t.rsplit("/", 1)[0] for t in state.audit.orphaned
    }
