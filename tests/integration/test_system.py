"""The real system (Ray, vLLM, DeepSpeed, gymnasium envs) trained for a few steps.

Checks the contracts issue 2 names: versions advance; every trained trajectory's
versions are at most the learner's and within the staleness bound; after a
sync the engine's logprobs equal the learner's; the old weights' differ.
"""

from __future__ import annotations

import pytest

from core.chat import ChatCodec
from core.config import LoggerConfig
from core.metrics import MetricsLogger
from envs import make_env
from orchestrator.controller import train
from rollout.agent import EpisodeSpec, Served, run_episode
from tests.integration.conftest import LOGPROB_TOLERANCE


@pytest.fixture(scope="module")
def probe_ids(tiny_policy):
    from transformers import AutoTokenizer

    env = make_env("asyncrl/Calculator-v0")
    codec = ChatCodec(AutoTokenizer.from_pretrained(tiny_policy), env.tool_schemas)
    observation, _ = env.reset(seed=123)
    return codec.prompt_ids(list(observation)) + codec.encode("<answer>17</answer>")


def _max_diff(a, b):
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_async_training_versions_staleness_and_weight_arrival(
    running_system, probe_ids, event_loop_runner, tmp_path
):
    system, cfg = running_system
    before_learner = event_loop_runner(system.learner.logprobs(probe_ids))
    before_engine = event_loop_runner(system.fleet.prompt_logprobs(probe_ids))["rollout-0"]
    assert _max_diff(before_learner, before_engine) < LOGPROB_TOLERANCE

    logger = MetricsLogger(LoggerConfig(run_dir=str(tmp_path), plot_every=0))
    logger.cfg.wandb.enabled = False
    state = event_loop_runner(train(system, cfg, logger))
    logger.close()

    first = state.version - cfg.trainer.total_steps
    assert (
        len(state.trained)
        == cfg.trainer.total_steps * cfg.buffer.groups_per_batch * cfg.env.group_size
    )
    for record in state.trained:
        assert 0 <= record.min_version <= record.max_version <= record.learner_version
        assert record.learner_version - record.min_version <= cfg.buffer.max_staleness
    assert [round(h["trainer/version"]) for h in state.history] == [first + 1 + i for i in range(4)]
    last = state.history[-1]
    assert last["ledger/balanced"] == 1.0
    assert last["ledger/trained"] == len(state.trained)  # replay_ratio 1: each once
    assert last["ledger/produced"] >= last["ledger/trained"] + last["ledger/in_flight"]

    after_learner = event_loop_runner(system.learner.logprobs(probe_ids))
    after_engines = event_loop_runner(system.fleet.prompt_logprobs(probe_ids))
    assert len(after_engines) == cfg.rollout.num_workers
    for after_engine in after_engines.values():
        assert _max_diff(after_learner, after_engine) < LOGPROB_TOLERANCE
        assert _max_diff(after_engine, before_engine) > 20 * LOGPROB_TOLERANCE


def test_real_engine_trajectory_is_token_exact(running_system, tiny_policy, event_loop_runner):
    from transformers import AutoTokenizer

    system, cfg = running_system
    worker = system.fleet.workers["rollout-0"]
    env = make_env("asyncrl/Calculator-v0")
    codec = ChatCodec(AutoTokenizer.from_pretrained(tiny_policy), env.tool_schemas)
    seen: list[tuple[list[int], list[int]]] = []

    async def recording_generate(prompt_ids, spec):
        generation = await worker.generate.remote(prompt_ids, spec, 60.0)
        seen.append((list(prompt_ids), list(generation.token_ids)))
        return Served(generation, "rollout-0")

    spec = EpisodeSpec("probe/0", "probe", env.spec.id if env.spec else "calc", 5, 32, 1024)
    traj = event_loop_runner(run_episode(env, codec, recording_generate, spec))

    assert seen, "the engine was never called"
    last_prompt, last_output = seen[-1]
    assert traj.tokens == last_prompt + last_output
    for (prompt, output), (next_prompt, _) in zip(seen, seen[1:], strict=False):
        assert next_prompt[: len(prompt) + len(output)] == prompt + output
    generated = [tok for tok, m in zip(traj.tokens, traj.loss_mask, strict=True) if m]
    assert generated == [tok for _, output in seen for tok in output]
    assert all(lp <= 0.0 for lp in traj.behavior_logprobs)
    assert set(traj.generated_versions) <= {system_version(system, event_loop_runner)}


def system_version(system, run) -> int:
    return run(system.fleet.worker_stats())["rollout-0"].version


def test_each_cpu_engine_runs_its_model_in_one_process_on_its_own_core(
    running_system, event_loop_runner
):
    """A rollout worker bound to a core runs vLLM's model in the engine-core process
    it spawned (no separate worker process: rollout.engine_args.one_process), the one
    it spawned before vLLM asked for it (rollout.warm_core), and that process is
    confined to the worker's core, the one the placement table shows."""
    system, _ = running_system
    shown = {name: p.cores for role, name, p in event_loop_runner(system.placements())}
    cores = set()
    for worker_id, handle in system.fleet.workers.items():
        processes = event_loop_runner(handle.engine_processes.remote())
        assert len(processes) == 1, processes
        (process,) = processes
        assert process["spawned_by_worker"], f"{worker_id}'s model runs a process further down"
        assert process["prespawned"], f"{worker_id}: vLLM spawned its own engine-core process"
        assert tuple(process["cores"]) == shown[worker_id]
        assert len(shown[worker_id]) == 1
        cores |= set(shown[worker_id])
    assert len(cores) == len(system.fleet.workers), "two engines share a core"
