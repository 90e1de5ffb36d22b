"""The multi-turn agent loop: one episode between an environment and an engine.

`run_episode` drives a gymnasium env turn by turn through a `generate` callable
and builds the token-exact Trajectory: the rendered prompt, then for each turn
the ids the engine produced (with their logprobs and weight versions) and the
chat-template delta of the environment's reply, tokenized once. Text is decoded
only to hand the turn to the environment; it is never re-tokenized.

Images (vision-language models): the engine is sent each image's single image
token plus the images, and vLLM expands every image token into the image's
placeholder tokens before the model runs. The trajectory must hold what the
model ran on, so ids that contain or follow a new image are recorded from the
prompt the engine reports back (checked to extend what was recorded), while
every request keeps sending the compact ids. Text-only episodes take none of
this path: their ids are recorded as rendered, as before.

MoE routing (R3): each turn asks the engine for the routing of every position
from the first one the trajectory has none for, and records the rows on the
positions they cover, so `Trajectory.routed_experts` ends with one row per token
(prompt, observation and generated), the last token's unknown (never run).

Which engine serves a turn is the caller's business (see envpool/router); this
module knows envs, the codec and the Generation record, nothing about Ray.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym

from core.chat import ChatCodec, Rendered
from core.config import RolloutConfig
from core.types import RoutedExperts, Status, Trajectory, Turn
from envs import astep
from rollout.engine import Generation, SamplingSpec


@dataclass
class Served:
    """A generation plus where it ran (filled by the caller's router)."""

    generation: Generation
    worker_id: str
    moved: bool = False
    """The session's worker was lost and this turn ran on another one."""


class GenerateFn(Protocol):
    """Serves one turn. `images` (PNG bytes, one per image token in `prompt_ids`)
    is passed only when the episode has images, so a text-only caller may leave
    it out of its signature."""

    def __call__(
        self, prompt_ids: list[int], sampling: SamplingSpec, *, images: list[bytes] = ...
    ) -> Awaitable[Served]: ...


class TokenMismatch(RuntimeError):
    """The prompt the engine ran does not extend the recorded trajectory."""


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


def episode_spec(
    rollout: RolloutConfig,
    env_id: str,
    trajectory_id: str,
    group_id: str,
    task_seed: int,
    temperature: float,
) -> EpisodeSpec:
    """An episode of `task_seed` under `rollout`'s limits, sampled at `temperature`."""
    return EpisodeSpec(
        trajectory_id=trajectory_id,
        group_id=group_id,
        env_id=env_id,
        task_seed=task_seed,
        max_tokens_per_turn=rollout.max_tokens_per_turn,
        max_model_len=rollout.max_model_len,
        temperature=temperature,
        top_p=rollout.top_p,
    )


async def run_episode(
    env: gym.Env, codec: ChatCodec, generate: GenerateFn, spec: EpisodeSpec
) -> Trajectory:
    started = time.perf_counter()
    observation, _ = env.reset(seed=spec.task_seed)
    prompt = codec.prompt(list(observation))
    traj = Trajectory(
        trajectory_id=spec.trajectory_id,
        group_id=spec.group_id,
        env_id=spec.env_id,
        task_seed=spec.task_seed,
        prompt_length=0 if prompt.images else len(prompt.ids),  # images: once expanded
    )
    context = _EngineContext(traj)
    context.add(prompt)
    status, reward, info = Status.TRUNCATED, 0.0, {}
    while True:
        budget = min(spec.max_tokens_per_turn, spec.max_model_len - context.length)
        if budget <= 0:
            break  # the conversation filled the context: truncated
        asked = time.perf_counter()
        try:
            sampling = _sampling(spec, budget, codec, _routing_frontier(traj))
            served = await context.generate(generate, sampling)
            turn = _record_turn(traj, served, time.perf_counter() - asked)
        except TokenMismatch as exc:
            status, info = Status.FAILED, {"failure": str(exc)}
            break
        context.extend(served.generation.token_ids)
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
        context.add(codec.observation(list(observation)))
    _finish(traj, status, reward, info, time.perf_counter() - started)
    return traj


class _EngineContext:
    """The ids the engine is sent, beside the ids the trajectory records.

    Without images the two are the same and every rendered piece is recorded at
    once. From the first image on, pieces wait (`unseen`) until the engine has
    run them: its reported prompt, expanded, must start with the recorded ids,
    and the rest of it is recorded as the pieces' tokens."""

    def __init__(self, traj: Trajectory):
        self.traj = traj
        self.ids: list[int] = []
        """The conversation as the engine is sent it: one token per image."""
        self.unseen = 0
        """Ids at the end of `ids` whose expansion the engine has not reported yet."""

    @property
    def length(self) -> int:
        """Tokens in the engine's context so far (a lower bound while images are unseen)."""
        return len(self.traj.tokens) + self.unseen

    def add(self, rendered: Rendered) -> None:
        """Append a rendered prompt or observation (recorded now or once the engine ran it)."""
        self.ids.extend(rendered.ids)
        if rendered.images or self.unseen:
            self.traj.images.extend(rendered.images)
            self.unseen += len(rendered.ids)
        else:
            self._record(rendered.ids)

    def extend(self, generated: list[int]) -> None:
        self.ids.extend(generated)

    async def generate(self, generate: GenerateFn, sampling: SamplingSpec) -> Served:
        if not self.traj.images:
            return await generate(list(self.ids), sampling)
        served = await generate(list(self.ids), sampling, images=list(self.traj.images))
        self._record_ran(served.generation)
        return served

    def _record_ran(self, generation: Generation) -> None:
        ran = generation.prompt_ids
        if ran is None:
            if generation.finish_reason == "abort" or not self.unseen:
                return  # never ran, or nothing new to learn from it
            raise TokenMismatch("the engine did not report the prompt it ran with images")
        recorded = len(self.traj.tokens)
        if ran[:recorded] != self.traj.tokens or (not self.unseen and len(ran) != recorded):
            raise TokenMismatch(
                f"the engine ran a prompt of {len(ran)} tokens that is not the {recorded} "
                f"recorded plus what was added since (an image token in generated text?)"
            )
        if self.unseen:
            if not self.traj.turns:
                self.traj.prompt_length = len(ran)
            self._record(ran[recorded:])
            self.unseen = 0

    def _record(self, ids: list[int]) -> None:
        self.traj.append(ids, generated=False)
        if self.traj.turns:
            self.traj.turns[-1].num_observation += len(ids)


def _sampling(
    spec: EpisodeSpec, budget: int, codec: ChatCodec, routing_start: int = 0
) -> SamplingSpec:
    return SamplingSpec(
        max_tokens=budget,
        temperature=spec.temperature,
        top_p=spec.top_p,
        stop_token_ids=tuple(codec.stop_token_ids),
        routed_experts_start=routing_start,
    )


def _routing_frontier(traj: Trajectory) -> int:
    """The first position the trajectory has no routing for (0 before any): the
    engine reports rows from there, so no position is sent twice."""
    return 0 if traj.routed_experts is None else traj.routed_experts.frontier


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
    _record_routing(traj, generation)
    return turn


def _record_routing(traj: Trajectory, generation: Generation) -> None:
    """Place the turn's routing rows on the positions they cover (prompt,
    observations and generated ids of this call, all but its last token); rows for
    positions an earlier call reported are dropped, the earlier rows stay."""
    routed = generation.routed_experts
    if routed is None:
        return
    start, end = generation.routed_experts_start, generation.routed_experts_start + len(routed)
    if end != len(traj.tokens) - 1:
        raise TokenMismatch(
            f"routing rows for positions [{start}, {end}) do not end at the last token of "
            f"a {len(traj.tokens)}-token trajectory"
        )
    if traj.routed_experts is None:
        _, layers, top_k = routed.shape
        traj.routed_experts = RoutedExperts(
            layers, top_k, routed.dtype.name, [None] * len(traj.tokens)
        )
    traj.routed_experts.place(start, [row.tobytes() for row in routed])


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
