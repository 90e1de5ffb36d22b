"""Token-exactness: a trajectory is exactly what the engine was fed and produced.

A scripted engine replies with the tokens of a competent assistant and records
every request; the trajectory must be the last request plus the last reply,
each request must extend the previous one, and only generated ids carry a mask,
a logprob and a version. With routed experts on, the engine reports them in
vLLM 0.32's layout (`VllmRouting`), and the trajectory must hold them token-aligned.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.config import RolloutConfig
from core.types import NO_VERSION, Status
from envs.calculator import scripted_reply
from rollout.agent import EpisodeSpec, Served, run_episode
from rollout.engine import Engine, EngineError, Generation, SamplingSpec
from rollout.engine_args import EngineUnsupported, check_supported


class VllmRouting:
    """The routed-experts rows vLLM 0.32 returns for one request, as read in the
    installed source (.venv/lib/python3.11/site-packages/vllm/):

    - rows cover positions [start, P + G - 1) of prompt + generated ids, with
      start = min(routed_experts_prompt_start, P)
      (distributed/aux_output_connector/connector.py:71-77) and the last token
      left out, never run (connector.py:116-133); one array on the final output
      (v1/engine/output_processor.py:466-468), uint8 [rows, layers, top_k] for
      at most 256 experts (model_executor/layers/fused_moe/routed_experts_capturer.py:67-68);
    - a start outside [0, P] is refused (v1/engine/input_processor.py:457-463);
    - prefix caching: leading full KV blocks of the prompt found in the cache are
      not run (never the prompt's last token: v1/core/kv_cache_manager.py:290-295);
      their rows are read back from the rows stored under the block's hash when it
      was first computed (aux_output_connector/worker.py:253-287), and a block
      stored once keeps its first rows (aux_output_connector/store.py:166,182-183).

    A row computed here names what ran: layer 0 holds (token id, call number),
    every other layer (position, call number), so a test can tell where each row
    landed and which call computed it."""

    BLOCK = 4

    def __init__(self, num_layers: int = 2):
        self.num_layers = num_layers
        self.calls = 0
        self.store: dict[tuple[int, ...], np.ndarray] = {}
        """Rows of each full block computed so far, by the ids up to the block's end."""

    def rows(self, prompt: list[int], generated: list[int], start: int) -> np.ndarray:
        if not 0 <= start <= len(prompt):
            raise ValueError(f"routed_experts_prompt_start must be between 0 and {len(prompt)}")
        ids, call = prompt + generated, self.calls
        self.calls += 1
        ran = len(ids) - 1  # the last token is sampled, never run
        rows = np.empty((ran, self.num_layers, 2), dtype=np.uint8)
        for i in range(ran):
            rows[i, 0] = (ids[i] % 256, call)
            rows[i, 1:] = (i % 256, call)
        cached = self._cached(prompt)
        for end in range(self.BLOCK, cached + 1, self.BLOCK):
            rows[end - self.BLOCK : end] = self.store[tuple(ids[:end])]
        for end in range(self.BLOCK, ran + 1, self.BLOCK):
            self.store.setdefault(tuple(ids[:end]), rows[end - self.BLOCK : end].copy())
        return rows[start:]

    def _cached(self, prompt: list[int]) -> int:
        """Positions at the prompt's start served from the prefix cache."""
        end = 0
        while end + self.BLOCK <= len(prompt) - 1 and tuple(prompt[: end + self.BLOCK]) in (
            self.store
        ):
            end += self.BLOCK
        return end


class ScriptedEngine:
    def __init__(self, codec, env, versions, routing: VllmRouting | None = None):
        self.codec, self.env, self.versions = codec, env, list(versions)
        self.routing = routing
        self.requests: list[list[int]] = []
        self.starts: list[int] = []
        self.replies: list[list[int]] = []

    async def __call__(self, prompt_ids, spec):
        self.requests.append(list(prompt_ids))
        self.starts.append(spec.routed_experts_start)
        text = scripted_reply(self.env.task, self.env.messages, use_tool=True)
        ids = self.codec.encode(text) + list(spec.stop_token_ids)
        self.replies.append(ids)
        version = self.versions.pop(0)
        generation = Generation(
            ids, [-0.5] * len(ids), [version] * len(ids), "stop", len(prompt_ids)
        )
        if self.routing is not None:  # an MoE engine reporting top-2 routing per layer
            start = min(spec.routed_experts_start, len(prompt_ids))
            generation.routed_experts = self.routing.rows(list(prompt_ids), ids, start)
            generation.routed_experts_start = start
        return Served(generation, "w0")


def _run(codec, env, versions=(0, 1), routing=None, trajectory_id="t0"):
    engine = ScriptedEngine(codec, env, versions, routing)
    spec = EpisodeSpec(
        trajectory_id, "g0", "calc", task_seed=11, max_tokens_per_turn=64, max_model_len=1024
    )
    traj = asyncio.run(run_episode(env, codec, engine, spec))
    return traj, engine


def _decoded(traj) -> list[np.ndarray | None]:
    routed = traj.routed_experts
    shape = (routed.num_layers, routed.top_k)
    return [
        None if row is None else np.frombuffer(row, dtype=routed.dtype).reshape(shape)
        for row in routed.rows
    ]


def test_trajectory_is_what_the_engine_saw_and_produced(codec, calculator_env):
    traj, engine = _run(codec, calculator_env)
    assert traj.status == Status.COMPLETED and traj.reward > 1.0  # correct + format
    assert len(engine.requests) == 2
    assert traj.tokens == engine.requests[-1] + engine.replies[-1]
    first_prompt = engine.requests[0]
    assert engine.requests[1][: len(first_prompt) + len(engine.replies[0])] == (
        first_prompt + engine.replies[0]
    )
    observation = engine.requests[1][len(first_prompt) + len(engine.replies[0]) :]
    assert observation == codec.observation_ids(
        [{"role": "tool", "content": calculator_env.task["answer"]}]
    )


def test_only_generated_tokens_carry_mask_logprob_and_version(codec, calculator_env):
    traj, engine = _run(codec, calculator_env, versions=(3, 4))
    generated = [tok for tok, m in zip(traj.tokens, traj.loss_mask, strict=True) if m]
    assert generated == engine.replies[0] + engine.replies[1]
    assert all(
        lp == -0.5 for lp, m in zip(traj.behavior_logprobs, traj.loss_mask, strict=False) if m
    )
    assert all(
        v == NO_VERSION for v, m in zip(traj.versions, traj.loss_mask, strict=False) if not m
    )
    assert traj.generated_versions == [3] * len(engine.replies[0]) + [4] * len(engine.replies[1])
    assert [t.start for t in traj.turns] == [
        len(engine.requests[0]),
        len(engine.requests[1]),
    ]


def test_ids_render_back_to_the_chat_template_text(codec, calculator_env):
    traj, _ = _run(codec, calculator_env)
    text = codec.tokenizer.decode(traj.tokens)
    assert text == codec.render(calculator_env.messages, add_generation_prompt=False).rstrip("\n")


def test_turn_cut_by_max_tokens_ends_the_episode_truncated(codec, calculator_env):
    async def rambling(prompt_ids, spec):
        ids = codec.encode("la " * spec.max_tokens)[: spec.max_tokens]
        return Served(
            Generation(ids, [-1.0] * len(ids), [0] * len(ids), "length", len(prompt_ids)), "w0"
        )

    spec = EpisodeSpec("t", "g", "calc", 0, max_tokens_per_turn=8, max_model_len=1024)
    traj = asyncio.run(run_episode(calculator_env, codec, rambling, spec))
    assert traj.status == Status.TRUNCATED and traj.reward == 0.0
    assert traj.num_generated == 8


def test_every_token_but_the_last_gets_the_routing_of_the_call_that_ran_it(codec, calculator_env):
    traj, engine = _run(codec, calculator_env, routing=VllmRouting(num_layers=3))
    assert len(engine.requests) == 2 and traj.turns[1].num_observation == 0
    first_end = len(engine.requests[0]) + len(engine.replies[0])  # turn 0's ids
    # turn 1 asks from turn 0's last token, the first one without routing
    assert engine.starts == [0, first_end - 1]
    rows = _decoded(traj)
    assert len(rows) == len(traj.tokens) and rows[-1] is None
    assert all(row is not None for row in rows[:-1])  # prompt, observation, generated
    for i, row in enumerate(rows[:-1]):
        assert row[0, 0] == traj.tokens[i] % 256 and (row[1:, 0] == i % 256).all()
        assert (row[:, 1] == (0 if i < first_end - 1 else 1)).all()
    observation = range(first_end, len(engine.requests[1]))
    assert len(observation) > 0 and not any(traj.loss_mask[i] for i in observation)
    plain, _ = _run(codec, calculator_env)
    assert plain.routed_experts is None


def test_prefix_cached_prompt_keeps_the_routing_of_the_call_that_computed_it(codec, calculator_env):
    """Two samples of one task share its prompt: the second finds the prompt's full
    blocks in vLLM's prefix cache, so vLLM returns the first sample's rows there."""
    routing = VllmRouting()
    first, _ = _run(codec, calculator_env, routing=routing, trajectory_id="a")
    second, engine = _run(codec, calculator_env, routing=routing, trajectory_id="b")
    cached = (first.prompt_length - 1) // VllmRouting.BLOCK * VllmRouting.BLOCK
    rows = _decoded(second)
    assert cached > 0 and all((row[:, 1] == 0).all() for row in rows[:cached])
    assert all((row[:, 1] == 2).all() for row in rows[cached : first.prompt_length])
    assert first.routed_experts.rows[:cached] == second.routed_experts.rows[:cached]


def test_routing_that_does_not_end_at_the_last_token_fails_the_trajectory(codec, calculator_env):
    """An engine whose rows cannot be placed on the tokens: the trajectory fails with
    the reason, it is never recorded misaligned."""

    class OffByOne(ScriptedEngine):
        async def __call__(self, prompt_ids, spec):
            served = await super().__call__(prompt_ids, spec)
            served.generation.routed_experts = served.generation.routed_experts[:-1]
            return served

    engine = OffByOne(codec, calculator_env, (0, 1), VllmRouting())
    spec = EpisodeSpec("t", "g", "calc", 11, max_tokens_per_turn=64, max_model_len=1024)
    traj = asyncio.run(run_episode(calculator_env, codec, engine, spec))
    assert traj.status == Status.FAILED and "do not end at the last token" in traj.failure


class _FakeAsyncLLM:
    """Stands in for vllm.v1.engine.async_llm.AsyncLLM.generate: yields one final
    RequestOutput-shaped record (vllm/outputs.py:84 CompletionOutput.routed_experts,
    attached on the final output only: v1/engine/output_processor.py:466-468)."""

    def __init__(self, rows_for):
        self.rows_for = rows_for
        self.params = None

    async def generate(self, prompt, params, request_id):
        self.params = params
        prompt_ids = list(prompt["prompt_token_ids"])
        generated = [7, 8, 9]
        completion = SimpleNamespace(
            token_ids=generated,
            logprobs=[{t: SimpleNamespace(logprob=-1.0)} for t in generated],
            weight_versions=[SimpleNamespace(version="0", start=0, end=3)],
            finish_reason="stop",
            spec_decode_metrics=None,
            routed_experts=self.rows_for(prompt_ids, generated, params),
        )
        yield SimpleNamespace(
            prompt_token_ids=prompt_ids, num_cached_tokens=0, outputs=[completion]
        )


def _engine_generate(rows_for, start):
    engine = Engine("unused", RolloutConfig(max_model_len=64, return_routed_experts=True))
    engine._llm = _FakeAsyncLLM(rows_for)
    # vLLM's renderer turns token ids into a TokensInput (vllm/inputs/engine.py:30-37,
    # 56), a dict holding them as `prompt_token_ids`, which the fake AsyncLLM reads
    engine._render = lambda ids, images: {"type": "token", "prompt_token_ids": list(ids)}
    spec = SamplingSpec(max_tokens=3, routed_experts_start=start)
    generation = asyncio.run(engine.generate([1, 2, 3, 4, 5], spec, timeout_s=5.0))
    return generation, engine._llm.params


def test_engine_asks_vllm_for_rows_from_the_start_and_keeps_them_as_reported():
    routing = VllmRouting()

    def rows_for(prompt, generated, params):
        return routing.rows(prompt, generated, params.routed_experts_prompt_start)

    generation, params = _engine_generate(rows_for, start=2)
    assert params.routed_experts_prompt_start == 2
    assert generation.routed_experts_start == 2
    assert generation.routed_experts.shape == (5 + 3 - 1 - 2, 2, 2)  # P + G - 1 - start
    assert generation.routed_experts[:, 1, 0].tolist() == [2, 3, 4, 5, 6]  # positions


@pytest.mark.parametrize("extra", [-1, 1])
def test_engine_refuses_a_routing_row_count_off_vllms_layout(extra):
    def rows_for(prompt, generated, params):
        return np.zeros((len(prompt) + len(generated) - 1 + extra, 2, 2), dtype=np.uint8)

    with pytest.raises(EngineError, match="P \\+ G - 1 - start"):
        _engine_generate(rows_for, start=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU can return routed experts")
def test_routed_experts_are_refused_without_a_gpu():
    """vLLM returns routed experts only from Model Runner V2, which needs Triton:
    on CPU the worker refuses the config in one line instead of failing in vLLM."""
    with pytest.raises(EngineUnsupported, match="Model Runner V2"):
        check_supported(return_routed_experts=True)
    check_supported(return_routed_experts=False)
