"""The multi-turn agent loop: one episode between an environment and an engine.

`run_episode` drives a gymnasium env turn by turn through a `generate` callable
and builds the token-exact Trajectory: the rendered prompt, then for each turn
the ids the engine produced (with their logprobs and weight versions) and the
chat-template delta of the environment's reply, tokenized once. Text is decoded
only to hand the turn to the environment; it is never re-tokenized.

Which engine serves a turn is the caller's business (see envpool/router); this
module knows envs, the codec and the Generation record, nothing about Ray.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from core.chat import ChatCodec
from core.types import Status, Trajectory, Turn
from envs import astep
from rollout.engine import Generation, SamplingSpec


@dataclass
class Served:
    """A generation plus where it ran (filled by the caller's router)."""

    generation: Generation
    worker_id: str
    moved: bool = False
    """The session's worker was lost and this turn ran on another one."""


GenerateFn = Callable[[list[int], SamplingSpec], Awaitable[Served]]


@dataclass(frozen=True)
class EpisodeSpec:
    trajectory_id: str
    group_id: str
    env_id: str
    task_seed: int
    max_tokens_per_turn: int
    max_model_len: int
    temperature: float = 1.0
    top_p: float = 1.0


async def run_episode(
    env: gym.Env, codec: ChatCodec, generate: GenerateFn, spec: EpisodeSpec
) -> Trajectory:
    started = time.perf_counter()
    observation, _ = env.reset(seed=spec.task_seed)
    prompt = codec.prompt_ids(list(observation))
    traj = Trajectory(
        trajectory_id=spec.trajectory_id,
        group_id=spec.group_id,
        env_id=spec.env_id,
        task_seed=spec.task_seed,
        prompt_length=len(prompt),
    )
    traj.append(prompt, generated=False)
    status, reward, info = Status.TRUNCATED, 0.0, {}
    while True:
        budget = min(spec.max_tokens_per_turn, spec.max_model_len - len(traj.tokens))
        if budget <= 0:
            break  # the conversation filled the context: truncated
        asked = time.perf_counter()
        served = await generate(list(traj.tokens), _sampling(spec, budget, codec))
        turn = _record_turn(traj, served, time.perf_counter() - asked)
        if served.generation.finish_reason == "abort":
            status = Status.ABORTED
            break
        if served.generation.finish_reason != "stop":
            break  # the turn never ended: truncated, scored 0
        env_started = time.perf_counter()
        observation, step_reward, terminated, truncated, info = await astep(
            env, codec.decode(served.generation.token_ids)
        )
        turn.env_s = time.perf_counter() - env_started
        reward += float(step_reward)
        if info.get("failure"):
            status = Status.FAILED
            break
        if terminated or truncated:
            status = Status.COMPLETED if terminated else Status.TRUNCATED
            break
        delta = codec.observation_ids(list(observation))
        traj.append(delta, generated=False)
        turn.num_observation = len(delta)
    _finish(traj, status, reward, info, time.perf_counter() - started)
    return traj


def _sampling(spec: EpisodeSpec, budget: int, codec: ChatCodec) -> SamplingSpec:
    return SamplingSpec(
        max_tokens=budget,
        temperature=spec.temperature,
        top_p=spec.top_p,
        stop_token_ids=tuple(codec.stop_token_ids),
    )


def _record_turn(traj: Trajectory, served: Served, seconds: float) -> Turn:
    generation = served.generation
    turn = Turn(
        start=len(traj.tokens),
        num_generated=len(generation.token_ids),
        num_observation=0,
        worker_id=served.worker_id,
        finish_reason=generation.finish_reason,
        generate_s=seconds,
    )
    traj.append(
        generation.token_ids,
        generated=True,
        logprobs=generation.logprobs,
        versions=generation.versions,
    )
    traj.turns.append(turn)
    traj.lock_broken = traj.lock_broken or served.moved
    if generation.routed_experts is not None:
        traj.routed_experts = (traj.routed_experts or []) + generation.routed_experts
    return turn


def _finish(
    traj: Trajectory, status: Status, reward: float, info: dict[str, Any], seconds: float
) -> None:
    traj.status = status
    traj.reward = reward if status.trainable else 0.0
    traj.reward_components = dict(info.get("reward_components") or {})
    traj.failure = info.get("failure")
    traj.num_tool_calls = int(info.get("tool_calls", 0))
    traj.num_tool_errors = int(info.get("tool_errors", 0))
    traj.tool_error_kinds = dict(info.get("tool_error_kinds") or {})
    traj.timings = {
        "episode_s": seconds,
        "generate_s": sum(t.generate_s for t in traj.turns),
        "env_s": sum(t.env_s for t in traj.turns),
    }
