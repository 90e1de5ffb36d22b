"""Token-exactness: a trajectory is exactly what the engine was fed and produced.

A scripted engine replies with the tokens of a competent assistant and records
every request; the trajectory must be the last request plus the last reply,
each request must extend the previous one, and only generated ids carry a mask,
a logprob and a version.
"""

from __future__ import annotations

import asyncio

from core.types import NO_VERSION, Status
from envs.calculator import scripted_reply
from rollout.agent import EpisodeSpec, Served, run_episode
from rollout.engine import Generation


class ScriptedEngine:
    def __init__(self, codec, env, versions, num_layers=0):
        self.codec, self.env, self.versions = codec, env, list(versions)
        self.num_layers = num_layers
        self.requests: list[list[int]] = []
        self.replies: list[list[int]] = []

    async def __call__(self, prompt_ids, spec):
        self.requests.append(list(prompt_ids))
        text = scripted_reply(self.env.task, self.env.messages, use_tool=True)
        ids = self.codec.encode(text) + list(spec.stop_token_ids)
        self.replies.append(ids)
        version = self.versions.pop(0)
        generation = Generation(
            ids, [-0.5] * len(ids), [version] * len(ids), "stop", len(prompt_ids)
        )
        if self.num_layers:  # an MoE engine reporting top-2 routing per layer
            generation.routed_experts = [
                [[tok % 8, (tok + 1) % 8]] * self.num_layers for tok in ids
            ]
        return Served(generation, "w0")


def _run(codec, env, versions=(0, 1), num_layers=0):
    engine = ScriptedEngine(codec, env, versions, num_layers)
    spec = EpisodeSpec("t0", "g0", "calc", task_seed=11, max_tokens_per_turn=64, max_model_len=1024)
    traj = asyncio.run(run_episode(env, codec, engine, spec))
    return traj, engine


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


def test_routed_experts_follow_the_generated_tokens(codec, calculator_env):
    traj, engine = _run(codec, calculator_env, num_layers=2)
    generated = [tok for tok, m in zip(traj.tokens, traj.loss_mask, strict=True) if m]
    assert traj.routed_experts is not None and len(traj.routed_experts) == len(generated)
    assert traj.routed_experts[0] == [[generated[0] % 8, (generated[0] + 1) % 8]] * 2
    plain, _ = _run(codec, calculator_env)
    assert plain.routed_experts is None
