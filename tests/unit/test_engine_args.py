"""An Engine is built from the run's RolloutConfig: every engine field of it reaches
vLLM's engine arguments (which vLLM accepts), engine_args last; every lock policy
has a pause mode vLLM knows."""

from __future__ import annotations

import typing

import pytest

from core.choices import RolloutLock
from core.config import RolloutConfig, SpeculativeConfig
from rollout.engine import PAUSE_MODES, Engine
from rollout.engine_args import eager_helpers, vllm_args

FIELDS = RolloutConfig(
    max_model_len=300,
    max_num_seqs=7,
    gpu_memory_utilization=0.25,
    enforce_eager=False,
    speculative=SpeculativeConfig(method="ngram", num_speculative_tokens=5, prompt_lookup_max=6),
    return_routed_experts=True,
)


def test_every_engine_field_of_the_rollout_config_reaches_vllm():
    args = vllm_args("/models/p", FIELDS, "bfloat16", seed=11)
    assert (args["model"], args["dtype"], args["seed"]) == ("/models/p", "bfloat16", 11)
    assert (args["max_model_len"], args["max_num_seqs"]) == (300, 7)
    assert (args["gpu_memory_utilization"], args["enforce_eager"]) == (0.25, False)
    assert args["speculative_config"] == {
        "method": "ngram",
        "num_speculative_tokens": 5,
        "prompt_lookup_min": 2,
        "prompt_lookup_max": 6,
    }
    assert args["enable_return_routed_experts"] is True
    plain = vllm_args("/models/p", RolloutConfig(), "float32", seed=0)
    assert "speculative_config" not in plain and "enable_return_routed_experts" not in plain


def test_engine_args_override_the_rest():
    cfg = RolloutConfig(max_num_seqs=7, engine_args={"max_num_seqs": 3, "block_size": 16})
    args = vllm_args("/models/p", cfg, "float32", seed=0)
    assert (args["max_num_seqs"], args["block_size"]) == (3, 16)


def test_vllm_takes_the_arguments_an_engine_is_built_with(tmp_path):
    from vllm import AsyncEngineArgs

    engine = Engine(str(tmp_path), FIELDS, "float32", seed=3)  # offline: a local path
    assert engine.return_routed_experts is True
    parsed = AsyncEngineArgs(**engine._args)  # an unknown name is a TypeError here
    assert (parsed.max_model_len, parsed.max_num_seqs, parsed.seed) == (300, 7, 3)


@pytest.mark.parametrize("lock", list(RolloutLock))
def test_every_lock_policy_pauses_in_a_mode_vllm_knows(lock):
    from vllm.v1.engine import PauseMode  # Literal["abort", "wait", "keep"]

    assert PAUSE_MODES[lock] in typing.get_args(PauseMode)
    assert PAUSE_MODES[str(lock)] == PAUSE_MODES[lock]  # a plain string finds it too


def test_an_engine_bound_to_one_cpu_core_runs_its_model_in_the_engine_process():
    from rollout.engine_args import one_process

    bound = vllm_args("/models/p", RolloutConfig(), "float32", seed=0, core=1)
    assert bound["distributed_executor_backend"] == "uni" and one_process(bound)
    unbound = vllm_args("/models/p", RolloutConfig(), "float32", seed=0)
    assert "distributed_executor_backend" not in unbound and not one_process(unbound)
    gpu = vllm_args("/models/p", RolloutConfig(gpus_per_worker=2), "float32", seed=0, core=1)
    assert gpu["distributed_executor_backend"] == "mp" and not one_process(gpu)
    mine = RolloutConfig(engine_args={"distributed_executor_backend": "mp"})
    assert not one_process(vllm_args("/models/p", mine, "float32", seed=0, core=1))


def test_the_engine_process_is_born_on_its_core_and_nothing_else_changes(monkeypatch):
    import os

    from rollout.engine import MULTIPROCESSING_ENV, _engine_process_born

    monkeypatch.delenv(MULTIPROCESSING_ENV, raising=False)
    before = os.sched_getaffinity(0)
    core = max(before)
    bound = vllm_args("/models/p", RolloutConfig(), "float32", seed=0, core=core)
    import logging

    notice = logging.LogRecord(
        "vllm.engine.arg_utils",
        logging.WARNING,
        "",
        0,
        "The global random seed is set to %d. Since VLLM_ENABLE_V1_MULTIPROCESSING is "
        "set to False, this may affect the random state of the Python process that "
        "launched vLLM.",
        (0,),
        None,
    )
    arg_log = logging.getLogger("vllm.engine.arg_utils")
    with _engine_process_born(bound, core):
        assert os.environ[MULTIPROCESSING_ENV] == "0"  # vLLM's CPU platform keeps `uni`
        assert os.sched_getaffinity(0) == {core}  # what a spawned child inherits
        assert not arg_log.filter(notice)  # its premise does not hold for AsyncLLM
    assert arg_log.filter(notice)
    assert MULTIPROCESSING_ENV not in os.environ and os.sched_getaffinity(0) == before
    with _engine_process_born(vllm_args("/models/p", RolloutConfig(), "float32", 0), None):
        assert MULTIPROCESSING_ENV not in os.environ and os.sched_getaffinity(0) == before


def test_only_an_eager_cpu_engine_runs_vllms_compiled_helpers_eagerly():
    def helpers_eager(**fields) -> bool:
        cfg = RolloutConfig(**fields)
        return eager_helpers(cfg, vllm_args("/models/p", cfg, "float32", seed=0))

    assert helpers_eager()  # the default: CPU, enforce_eager
    assert not helpers_eager(enforce_eager=False)
    assert not helpers_eager(engine_args={"enforce_eager": False})  # engine_args have the last word
    assert not helpers_eager(gpus_per_worker=1)
