"""vLLM 0.32's routed-experts layout on a real engine (GPU only: returning routed
experts needs Model Runner V2, which needs Triton; on CPU `engine_args.check_supported`
refuses it, tested in tests/unit/test_token_exact.py).

What the fake engine of tests/unit/test_token_exact.py assumes, checked on the
real one: P + G - 1 - start rows, uint8 [rows, decoder layers, top-k]; a second
turn asked from the first position without routing gets rows from there on;
prefix-cached prompt positions come back with the rows of the call that
computed them."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
import torch

from core.config import RolloutConfig
from rollout.engine import Engine, SamplingSpec
from tests.tiny_models import tiny_moe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="routed experts need a GPU"),
]

LAYERS, EXPERTS, TOP_K, TIMEOUT_S = 2, 4, 2, 300.0


@pytest.fixture(scope="module")
def engine(tmp_path_factory, event_loop_runner):
    path = tmp_path_factory.mktemp("moe") / "policy"
    tiny_moe(vocab_size=320, layers=LAYERS, experts=EXPERTS, top_k=TOP_K).save_pretrained(path)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    cfg = RolloutConfig(
        max_model_len=256,
        return_routed_experts=True,
        engine_args={"skip_tokenizer_init": True},  # token ids in and out
    )
    started = Engine(str(path), cfg)
    event_loop_runner(asyncio.wait_for(started.start(), TIMEOUT_S))
    yield started
    started.shutdown()


def _generate(engine, run, prompt, start=0, max_tokens=6):
    spec = SamplingSpec(max_tokens=max_tokens, ignore_eos=True, routed_experts_start=start)
    return run(engine.generate(prompt, spec, timeout_s=TIMEOUT_S))


def test_rows_cover_every_position_but_the_last(engine, event_loop_runner):
    prompt = list(range(10, 31))  # 21 tokens
    first = _generate(engine, event_loop_runner, prompt)
    rows = first.routed_experts
    assert rows.dtype == np.uint8 and rows.shape == (21 + 6 - 1, LAYERS, TOP_K)
    assert first.routed_experts_start == 0 and (rows < EXPERTS).all()

    frontier = len(prompt) + len(first.token_ids) - 1  # turn 1's last token: never run
    second_prompt = prompt + first.token_ids + [40, 41, 42]  # plus an observation
    second = _generate(engine, event_loop_runner, second_prompt, start=frontier)
    assert second.routed_experts_start == frontier
    assert len(second.routed_experts) == len(second_prompt) + 6 - 1 - frontier

    again = _generate(engine, event_loop_runner, prompt)  # the prompt is prefix-cached now
    assert again.num_cached_tokens > 0
    cached = again.num_cached_tokens
    assert np.array_equal(again.routed_experts[:cached], rows[:cached])
