"""Heavy fixtures, started once per session: the test policy and a running System,
and `run_on`, which trains that System a few steps on another env.

The test policy is the tiny Qwen3 recipe with a shorter warm-up (its quality
does not matter here; make run shows learning). It is cached like any other.
Every training run on the shared System moves its policy on: a test must not
rely on what earlier runs left it able to do (runs on a tool that always fails
teach it to skip the tool, for one).
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from core.config import Config, EnvConfig, LoggerConfig, TinyModelConfig

TEST_TINY = TinyModelConfig(demos=600, warmup_steps=40)
LOGPROB_TOLERANCE = 2e-3
"""Max |logp_vllm - logp_learner| per token: both fp32, different kernels."""
TOOL_LATENCY_S = 0.5
"""The test fleet's calculator answers like a remote tool, so trajectories live
long enough for weight updates to land between their turns."""
TEST_OVERRIDES = [
    "model.tiny.demos=600",
    "model.tiny.warmup_steps=40",
    "env.group_size=4",
    "buffer.groups_per_batch=2",
    "rollout.max_tokens_per_turn=32",
    "logger.wandb.mode=offline",
]


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tiny_policy() -> str:
    from bootstrap.tiny import ensure_tiny_policy

    cache = Path(os.path.expanduser("~/.cache/asyncrl/models"))
    return ensure_tiny_policy(TEST_TINY, cache, "tiny-qwen3")


def small_run_config(run_dir: Path, **changes) -> Config:
    cfg = Config()
    cfg.model.tiny = TEST_TINY
    cfg.env.group_size = 4
    cfg.buffer.groups_per_batch = 2
    cfg.rollout.max_tokens_per_turn = 32
    cfg.logger.run_dir = str(run_dir)
    cfg.learner.startup_timeout_s = 300.0  # ~20 s here; a hang fails in minutes, not ten
    cfg.logger.wandb.enabled = False
    cfg.logger.progress = False
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        setattr(getattr(cfg, section), key, value)
    return cfg


@pytest.fixture(scope="session")
def event_loop_runner():
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster shared by every integration test of the session."""
    import ray

    from orchestrator.actors import start_ray

    start_ray(Config())
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def running_system(ray_cluster, tiny_policy, tmp_path_factory, event_loop_runner):
    """Two vLLM rollout workers (one core each) and one DeepSpeed rank, with env
    pools. The lock policy is read at every publish, so tests may change
    `cfg.rollout.lock` between training runs; each run continues the versions."""
    from orchestrator.system import System

    cfg = small_run_config(
        tmp_path_factory.mktemp("system-run"),
        trainer__total_steps=4,
        rollout__num_workers=2,
        env__kwargs={"tool_latency_s": TOOL_LATENCY_S},
    )
    system = event_loop_runner(System.start(cfg, tiny_policy))
    yield system, cfg
    event_loop_runner(system.shutdown())


@contextmanager
def pools_of(system: Any, env: EnvConfig) -> Iterator[None]:
    """The System's env pools swapped for one pool of `env` (same vLLM workers,
    same learner); the original pools are back afterwards."""
    from orchestrator import actors

    pools = system.fleet.pools
    saved = list(pools)
    cfg = copy.deepcopy(system.cfg)
    cfg.env = env
    pools[:] = [actors.env_pool(cfg, system.model_path, system.fleet.workers, 0)]
    try:
        yield
    finally:
        for pool in pools:
            actors.kill(pool)
        pools[:] = saved


def run_on(
    system: Any, base_cfg: Config, env: EnvConfig, steps: int, run_dir: Path, runner: Callable
) -> Any:
    """Train the shared System `steps` steps on `env` through the normal controller
    loop; returns the RunState. The lock policy stays the System's own."""
    from core.metrics import MetricsLogger
    from orchestrator.controller import train

    cfg = copy.deepcopy(base_cfg)
    cfg.env = env
    cfg.trainer.total_steps = steps
    cfg.logger.run_dir = str(run_dir)
    logger = MetricsLogger(LoggerConfig(run_dir=str(run_dir), plot_every=0))
    logger.cfg.wandb.enabled = False
    try:
        with pools_of(system, env):
            return runner(train(system, cfg, logger))
    finally:
        logger.close()
