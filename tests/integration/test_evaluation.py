"""Evaluation during training on the real system (Ray, vLLM, DeepSpeed, env pools).

An evaluation pins the version it evaluates, so what it reports for that version is
what a direct evaluation of the same weights (a fresh in-process vLLM engine, no
Ray, rollout.evaluate) gives on the same held-out tasks and seeds; its episodes
never reach the ledger, the buffer or the learner.
"""

from __future__ import annotations

import copy
import json

from bootstrap.policy import export_tokenizer
from core.config import EnvConfig, LoggerConfig
from core.evaluation import is_eval_id, sample_records
from core.metrics import MetricsLogger
from orchestrator.controller import train
from rollout.evaluate import evaluate_policy
from tests.integration.conftest import pools_of

STEPS = 4
EVAL_TASKS = 24
SCORES = ("eval/tasks", "eval/samples", "eval/accuracy", "eval/mean_reward", "eval/pass@1")


def test_evaluation_pins_its_version_and_equals_a_direct_evaluation_of_it(
    running_system, event_loop_runner, tmp_path
):
    system, base = running_system
    cfg = copy.deepcopy(base)
    cfg.env = EnvConfig(
        kwargs={"max_turns": 1, "max_operands": 2, "max_value": 9, "operators": "+"},
        group_size=base.env.group_size,
    )
    cfg.trainer.total_steps = STEPS
    cfg.eval.every, cfg.eval.tasks = 2, EVAL_TASKS
    cfg.logger.run_dir = str(tmp_path)
    logger = MetricsLogger(LoggerConfig(run_dir=str(tmp_path), plot_every=0))
    logger.cfg.wandb.enabled = False
    first = system.fleet.version
    try:
        with pools_of(system, cfg.env):
            state = event_loop_runner(train(system, cfg, logger))
    finally:
        logger.close()

    evaluated = [int(e["eval/version"]) for e in state.evaluations]
    every_second = {v for v in range(first, first + STEPS + 1) if v % 2 == 0}
    assert state.version == first + STEPS
    assert evaluated == sorted({first, state.version} | every_second)
    for evaluation in state.evaluations:
        assert evaluation["eval/off_version_samples"] == 0  # every turn ran on its version
        assert evaluation["eval/tasks"] == EVAL_TASKS and evaluation["eval/failed"] == 0
        assert 0 < evaluation["eval/rollout_share"] <= 1
    # never the ledger, the buffer or the learner
    assert not [t for t in state.ledger["states"] if is_eval_id(t)]
    assert not [r for r in state.trained if is_eval_id(r.trajectory_id)]
    per_step = cfg.buffer.groups_per_batch * cfg.env.group_size
    assert [h["learner/samples"] for h in state.history] == [per_step] * STEPS

    policy = tmp_path / "policy"
    event_loop_runner(system.learner.save_pretrained(str(policy)))
    export_tokenizer(system.model_path, str(policy))
    direct, episodes = event_loop_runner(evaluate_policy(str(policy), cfg, state.version))
    last = state.evaluations[-1]
    assert last["eval/version"] == state.version
    assert {k: direct[k] for k in SCORES} == {k: last[k] for k in SCORES}
    written = [json.loads(line) for line in (tmp_path / "eval" / f"v{state.version}.jsonl").open()]
    assert [r.pop("completion") for r in written]  # the text, for a reader
    assert written == sample_records(episodes, cfg.env.success_reward)  # token for token
    assert [t.task_seed for task in episodes for t in task] == list(range(10**9, 10**9 + 24))
    assert 0 < direct["eval/mean_reward"]  # the format reward, at least: a real score


def test_a_dataset_run_samples_its_train_split_and_evaluates_its_eval_split(
    running_system, event_loop_runner, tmp_path
):
    """The real producer draws dataset tasks through the curriculum (run-unique seeds,
    rows of the train split) and evaluation takes the eval split's rows."""
    from envs.dataset import DatasetEnv

    system, base = running_system
    subset = {"kind": "word"}
    train_rows = DatasetEnv(where=subset).num_tasks
    eval_rows = DatasetEnv(where=subset, split="eval").num_tasks
    cfg = copy.deepcopy(base)
    cfg.env = EnvConfig(
        id="asyncrl/Dataset-v0", kwargs={"where": subset}, group_size=base.env.group_size
    )
    cfg.trainer.total_steps = 2
    cfg.eval.every, cfg.eval.tasks = 100, 0
    cfg.eval.samples, cfg.eval.temperature, cfg.eval.pass_k = 3, 1.0, [1, 3]
    cfg.curriculum.enabled = True
    cfg.logger.run_dir = str(tmp_path)
    logger = MetricsLogger(LoggerConfig(run_dir=str(tmp_path), plot_every=0))
    logger.cfg.wandb.enabled = False
    try:
        with pools_of(system, cfg.env):
            state = event_loop_runner(train(system, cfg, logger))
    finally:
        logger.close()

    groups = {r.trajectory_id.rsplit("/", 1)[0] for r in state.trained}
    seeds = [int(g[1:].split(".")[0]) for g in groups]
    assert len(set(seeds)) == len(seeds) == 2 * cfg.buffer.groups_per_batch
    assert all(seed < train_rows for seed in seeds)  # first issues: seed = row
    last = state.history[-1]
    assert last["curriculum/tasks"] == train_rows
    retired = last["curriculum/retired_solved"] + last["curriculum/retired_unsolvable"]
    assert last["curriculum/active"] == train_rows - retired
    assert [e["eval/tasks"] for e in state.evaluations] == [eval_rows, eval_rows]
    for evaluation in state.evaluations:
        assert evaluation["eval/samples"] == 3 * eval_rows
        assert evaluation["eval/pass@3"] >= evaluation["eval/pass@1"]
    first = int(state.evaluations[0]["eval/version"])
    samples = [json.loads(line) for line in (tmp_path / "eval" / f"v{first}.jsonl").open()]
    by_task: dict[int, set] = {}
    for sample in samples:
        by_task.setdefault(sample["seed"], set()).add(tuple(sample["completion_ids"]))
    assert any(len(completions) > 1 for completions in by_task.values())  # sampled, not greedy
