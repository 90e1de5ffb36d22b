"""A run checkpoints and continues: train two steps with a checkpoint, train on
(the learner moves past it), restore, and the run continues at the saved step
and version with the saved buffer, the learner's weights back to the checkpoint's
and every rollout worker serving them."""

from __future__ import annotations

import copy

from core.config import LoggerConfig
from core.metrics import MetricsLogger
from orchestrator.checkpoint import checkpoint_root, latest, read_controller_state
from orchestrator.controller import train
from orchestrator.run import restore
from tests.integration.test_system import _max_diff, probe_ids  # noqa: F401 - fixture

LOGPROB_EXACT = 1e-6


def _logger(tmp_path):
    logger = MetricsLogger(LoggerConfig(run_dir=str(tmp_path), plot_every=0))
    logger.cfg.wandb.enabled = False
    return logger


def test_checkpoint_then_resume(running_system, probe_ids, event_loop_runner, tmp_path):  # noqa: F811
    run = event_loop_runner
    system, shared = running_system
    cfg = copy.deepcopy(shared)
    cfg.logger.run_dir = str(tmp_path)
    cfg.trainer.checkpoint_every = 2
    cfg.trainer.total_steps = 2

    first = run(train(system, cfg, _logger(tmp_path)))
    directory = latest(checkpoint_root(cfg))
    assert directory is not None and directory.name == "step-2"
    saved = read_controller_state(directory)
    assert (saved.next_step, saved.version) == (2, first.version)
    at_checkpoint = run(system.learner.logprobs(probe_ids))

    cfg.trainer.checkpoint_every = 0
    cfg.trainer.total_steps = 2
    run(train(system, cfg, _logger(tmp_path)))  # the learner moves on past the checkpoint
    assert _max_diff(run(system.learner.logprobs(probe_ids)), at_checkpoint) > 1e-4

    resume = run(restore(system, directory))
    assert _max_diff(run(system.learner.logprobs(probe_ids)), at_checkpoint) < LOGPROB_EXACT
    assert system.fleet.version == saved.version
    assert [g.group_id for g in resume.buffer["groups"]] == [
        g.group_id for g in saved.buffer["groups"]
    ]

    cfg.trainer.total_steps = 4
    cfg.eval.every, cfg.eval.tasks = 1000, 4  # the resumed version and the last one
    resumed = run(train(system, cfg, _logger(tmp_path), resume=resume))
    assert [round(h["trainer/version"]) for h in resumed.history] == [
        saved.version + 1,
        saved.version + 2,
    ]
    assert [e["eval/version"] for e in resumed.evaluations] == [
        saved.version,
        saved.version + 2,
    ]
    # what it trains on comes from the saved buffer, the groups in flight at the
    # checkpoint (re-run), or new seeds after the saved position: nothing from before
    buffered = {g.group_id for g in saved.buffer["groups"]}
    for record in resumed.trained:
        group_id = record.trajectory_id.split("/")[0]
        seed = int(group_id[1:])
        assert group_id in buffered or seed in saved.pending_seeds or seed >= saved.next_seed
