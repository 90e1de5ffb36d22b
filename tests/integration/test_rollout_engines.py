"""One more real vLLM worker beside the shared system, with ngram speculation on:
its behavior logprobs under speculation, an update landing mid-generation
(`lock=none`), and failover when it is killed (the module's last test).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from core.chat import ChatCodec
from core.config import RolloutConfig, SpeculativeConfig
from core.shm import remove_snapshot
from core.types import Status
from envs import make_env
from envs.calculator import scripted_reply
from rollout.engine import SamplingSpec
from tests.integration.conftest import LOGPROB_TOLERANCE

SPARE = "spare"


@pytest.fixture(scope="module")
def spare_worker(running_system, tiny_policy, event_loop_runner):
    """A RolloutWorker with ngram speculation; killed by the failover test."""
    import ray

    from rollout.worker import RolloutWorker

    system, cfg = running_system
    ngram = SpeculativeConfig(method="ngram", num_speculative_tokens=3, prompt_lookup_min=1)
    rollout = RolloutConfig(speculative=ngram)
    worker = (
        ray.remote(RolloutWorker)
        .options(num_cpus=0, max_concurrency=1000)
        .remote(SPARE, tiny_policy, rollout, cfg.model.dtype, 7, None)
    )
    event_loop_runner(worker.start.remote())
    yield worker
    ray.kill(worker)


@pytest.fixture(scope="module")
def codec(tiny_policy) -> ChatCodec:
    from transformers import AutoTokenizer

    env = make_env("asyncrl/Calculator-v0")
    return ChatCodec(AutoTokenizer.from_pretrained(tiny_policy), env.tool_schemas)


def _after_tool_result(codec: ChatCodec, seed: int) -> list[int]:
    """A prompt ending right after the calculator's answer: the reply echoes it."""
    env = make_env("asyncrl/Calculator-v0")
    env.reset(seed=seed)
    env.step(scripted_reply(env.task, env.messages, use_tool=True))
    return codec.prompt_ids(env.messages)


def _opened_call(codec: ChatCodec, seed: int) -> list[int]:
    """A prompt ending inside an opened calculator call: the continuation copies
    the question's expression, which is what ngram drafting finds."""
    env = make_env("asyncrl/Calculator-v0")
    observation, _ = env.reset(seed=seed)
    opening = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "'
    return codec.prompt_ids(list(observation)) + codec.encode(opening)


def _load_learner_weights(system, worker, version: int, run):
    snapshot = run(system.learner.export_weights(version))
    run(worker.update_weights.remote(snapshot, "turn"))
    return snapshot


def test_ngram_speculation_reports_the_target_models_logprobs(
    running_system, spare_worker, codec, event_loop_runner
):
    system, cfg = running_system
    snapshot = _load_learner_weights(system, spare_worker, 1000, event_loop_runner)
    spec = SamplingSpec(max_tokens=48, temperature=cfg.rollout.temperature)
    prompts = [_after_tool_result(codec, seed) for seed in range(6)]
    prompts += [_opened_call(codec, seed) for seed in range(10)]

    async def generate_all():
        return await asyncio.gather(*[spare_worker.generate.remote(p, spec, 60.0) for p in prompts])

    generations = event_loop_runner(generate_all())
    worst = 0.0
    for prompt, generation in zip(prompts, generations, strict=True):
        assert generation.token_ids and set(generation.versions) == {1000}
        recomputed = event_loop_runner(system.learner.logprobs(prompt + generation.token_ids))
        tail = recomputed[-len(generation.token_ids) :]
        worst = max(worst, *(abs(a - b) for a, b in zip(tail, generation.logprobs, strict=True)))
    assert worst < LOGPROB_TOLERANCE

    stats = event_loop_runner(spare_worker.stats.remote())
    assert stats.spec_drafted > 0 and 0 < stats.spec_accepted <= stats.spec_drafted
    remove_snapshot(snapshot)


def test_update_lands_mid_generation_and_generation_resumes(
    running_system, spare_worker, codec, event_loop_runner
):
    system, _ = running_system
    old = _load_learner_weights(system, spare_worker, 1001, event_loop_runner)
    new = event_loop_runner(system.learner.export_weights(1002))
    prompt = _after_tool_result(codec, seed=11)
    spec = SamplingSpec(max_tokens=900, ignore_eos=True)

    async def generate_with_an_update_inside():
        generating = asyncio.ensure_future(spare_worker.generate.remote(prompt, spec, 120.0))
        deadline = time.monotonic() + 30
        while (await spare_worker.stats.remote()).in_flight == 0:
            assert time.monotonic() < deadline, "generation never started"
            await asyncio.sleep(0.01)
        sync = await spare_worker.update_weights.remote(new, "none")
        return await generating, sync

    generation, sync = event_loop_runner(generate_with_an_update_inside())
    versions = generation.versions
    assert generation.finish_reason == "length" and len(versions) == 900
    assert versions[0] == 1001 and versions[-1] == 1002, "the update did not land mid-generation"
    assert versions == sorted(versions)
    assert sync.pause_s < 30
    remove_snapshot(old)
    remove_snapshot(new)


def test_a_sleeping_engine_holds_requests_until_an_update_wakes_it(
    running_system, spare_worker, codec, event_loop_runner
):
    """Colocated placement's sleep through vLLM's own state machine (on CPU the
    workers ignore the memory part, vllm/v1/worker/cpu_worker.py:179-185; the
    scheduler pause and the executor's sleeping tags are vLLM's)."""
    system, _ = running_system
    old = _load_learner_weights(system, spare_worker, 1003, event_loop_runner)
    new = event_loop_runner(system.learner.export_weights(1004))
    spec = SamplingSpec(max_tokens=8, ignore_eos=True)

    async def asleep_then_updated():
        await spare_worker.sleep.remote(1, "turn")
        sleeping = await spare_worker.is_sleeping.remote()
        held = asyncio.ensure_future(
            spare_worker.generate.remote(_after_tool_result(codec, seed=12), spec, 60.0)
        )
        done_while_asleep, _ = await asyncio.wait([held], timeout=2.0)
        sync = await spare_worker.update_weights.remote(new, "turn")
        awake = not await spare_worker.is_sleeping.remote()
        return sleeping, bool(done_while_asleep), sync, awake, await held

    sleeping, done_while_asleep, sync, awake, generation = event_loop_runner(asleep_then_updated())
    assert sleeping and not done_while_asleep  # nothing generates while the learner steps
    assert sync.version == 1004 and awake
    assert len(generation.token_ids) == 8 and set(generation.versions) == {1004}
    remove_snapshot(old)
    remove_snapshot(new)


def test_a_stopping_engine_is_gone_within_its_grace(tiny_policy, event_loop_runner):
    """A bound CPU engine's model runs in its one engine-core process, the one spawned
    before vLLM asked for it, born with the libraries vLLM preloads for it; its first
    request (logprobs included) compiles nothing there (vLLM's compiled helpers run
    eagerly in an eager CPU engine: ~2 s saved), while this process keeps
    torch.compile; stopping it with the rollout worker's
    grace takes about that long (vLLM's own default waits ~3 s here for the
    interpreter to finalize) and leaves no process behind."""
    import os

    import psutil
    import torch._dynamo

    from rollout.engine import Engine, SamplingSpec
    from rollout.worker import ENGINE_EXIT_GRACE_S

    engine = Engine(tiny_policy, RolloutConfig(), "float32", 0, core=max(os.sched_getaffinity(0)))
    event_loop_runner(asyncio.wait_for(engine.start(), 120))
    first = event_loop_runner(engine.generate([1, 2, 3, 4], SamplingSpec(max_tokens=4), 60))
    assert len(first.logprobs) == len(first.token_ids) > 0
    (process,) = event_loop_runner(engine.processes())
    assert engine.eager_helpers and process["compiled_frames"] == 0
    assert not torch._dynamo.config.disable, "only the process that runs the model"
    assert process["ppid"] == os.getpid()  # spawned here: no worker process below it
    assert process["pid"] == engine.prespawned.process.pid
    # what its dynamic loader started with is what vLLM's own spawn would have had
    born = psutil.Process(process["pid"]).environ()
    assert born.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD")

    async def stop() -> float:  # in the engine's loop, where vLLM closes its sockets
        started = time.perf_counter()
        engine.shutdown(ENGINE_EXIT_GRACE_S)
        return time.perf_counter() - started

    assert event_loop_runner(stop()) < ENGINE_EXIT_GRACE_S + 1.0
    try:
        psutil.Process(process["pid"]).wait(timeout=2.0)  # reaped, or not our child
    except psutil.NoSuchProcess:
        pass
    assert not psutil.pid_exists(process["pid"])


def test_killed_workers_sessions_finish_on_the_other_worker(
    running_system, spare_worker, tiny_policy, event_loop_runner
):
    import ray

    from core.records import GroupSpec
    from rollout.envpool import EnvPool

    system, cfg = running_system
    survivor = "rollout-1"
    pool = (
        ray.remote(EnvPool)
        .options(num_cpus=0, max_concurrency=1000)
        .remote(
            "failover-pool",
            {SPARE: spare_worker, survivor: system.fleet.workers[survivor]},
            tiny_policy,
            cfg.env,
            cfg.rollout,
        )
    )

    async def run_group_and_kill_spare():
        running = asyncio.ensure_future(pool.run_group.remote(GroupSpec("failover", 99, 8)))
        deadline = time.monotonic() + 60
        while (await pool.stats.remote()).workers[SPARE].sessions == 0:
            assert time.monotonic() < deadline, "no session was ever placed on the spare worker"
            await asyncio.sleep(0.01)
        ray.kill(spare_worker)
        return await running

    group = event_loop_runner(run_group_and_kill_spare())
    ray.kill(pool)

    assert len(group.trajectories) == 8
    assert all(t.status in (Status.COMPLETED, Status.TRUNCATED) for t in group.trajectories)
    moved = [t for t in group.trajectories if t.lock_broken]
    assert moved, "no trajectory was moved off the killed worker"
    for trajectory in moved:
        assert trajectory.turns[-1].worker_id == survivor
