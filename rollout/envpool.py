"""EnvPool: a Ray actor running many episodes at once as asyncio tasks.

Each call runs one group: `size` episodes of the same task (same seed), under
the trajectory ids the caller issued in the GroupSpec, each a
`run_episode` whose turns are placed on rollout workers by the pool's Router
(least outstanding tokens, session affinity). A worker that dies mid-turn is
marked dead and the turn is retried on another worker; the trajectory records
the move. Envs are reused across episodes from an idle list.

For `rollout.lock=trajectory` the publisher drives the drain through this pool:
`set_draining` stops new trajectories going to a worker, `sessions_on` says how
many are still locked to it, and `break_locks` marks the ones a timed-out drain
leaves behind (they will see the new weights). New trajectories wait while every
worker is draining.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from core.chat import ChatCodec, load_tokenizer
from core.config import EnvConfig, RolloutConfig
from core.evaluation import EvalTask
from core.records import GroupSpec, Placement, PoolStats
from core.types import Group, Status, Trajectory
from envs import make_env
from rollout.agent import EpisodeSpec, Served, episode_spec, run_episode
from rollout.engine import Generation, SamplingSpec
from rollout.router import NoWorkerAvailable, Router, WorkersDraining

log = logging.getLogger(__name__)

TRAIN, HELD_OUT = "train", "held_out"
"""The two envs a pool runs episodes of: the training env and evaluation's."""
RAY_CALL_GRACE_S = 30.0
"""Beyond the engine's own generation timeout, how long a Ray call may take."""
DRAIN_POLL_S = 0.05


class EnvPool:
    def __init__(
        self,
        pool_id: str,
        workers: dict[str, Any],
        model_path: str,
        env: EnvConfig,
        rollout: RolloutConfig,
    ):
        self.pool_id = pool_id
        self.env_cfg = env
        self.rollout_cfg = rollout
        self.workers = dict(workers)
        self.router = Router(list(workers))
        probe = make_env(env.id, env.kwargs)
        tokenizer = load_tokenizer(model_path)
        self.codec = ChatCodec(tokenizer, getattr(probe, "tool_schemas", None))
        self._env_kwargs: dict[str, dict[str, Any]] = {TRAIN: dict(env.kwargs)}
        self._idle_envs: dict[str, list[Any]] = {TRAIN: [probe], HELD_OUT: []}
        self._lock_broken: set[str] = set()
        self.episodes_started = 0
        self.episodes_finished = 0

    async def run_group(self, spec: GroupSpec) -> Group:
        temperature = self.rollout_cfg.temperature
        episodes = [
            self._episode(self._episode_spec(i, spec.group_id, spec.task_seed, temperature), TRAIN)
            for i in spec.trajectory_ids
        ]
        trajectories = await asyncio.gather(*episodes)
        return Group(spec.group_id, self.env_cfg.id, spec.task_seed, list(trajectories))

    async def run_eval(
        self, task: EvalTask, env_kwargs: dict[str, Any], temperature: float
    ) -> list[Trajectory]:
        """The samples of one held-out task, on the held-out env (`env_kwargs`) at
        `temperature`, under the evaluation's ids; they go back to the evaluator only."""
        if self._env_kwargs.get(HELD_OUT) != env_kwargs:
            self._env_kwargs[HELD_OUT], self._idle_envs[HELD_OUT] = dict(env_kwargs), []
        group_id = task.episode_ids[0].rsplit("/", 1)[0]
        episodes = [
            self._episode(self._episode_spec(i, group_id, task.seed, temperature), HELD_OUT)
            for i in task.episode_ids
        ]
        return list(await asyncio.gather(*episodes))

    def placement(self) -> Placement:
        return Placement.here()

    def stats(self) -> PoolStats:
        return PoolStats(
            pool_id=self.pool_id,
            pid=os.getpid(),
            episodes_started=self.episodes_started,
            episodes_finished=self.episodes_finished,
            workers=self.router.stats(),
        )

    def set_draining(self, worker_id: str, draining: bool) -> None:
        self.router.set_draining(worker_id, draining)

    def sessions_on(self, worker_id: str) -> int:
        return len(self.router.sessions_on(worker_id))

    def break_locks(self, worker_id: str) -> int:
        """Mark the trajectories still locked to `worker_id` as lock-broken."""
        sessions = self.router.sessions_on(worker_id)
        self._lock_broken.update(sessions)
        return len(sessions)

    def mark_dead(self, worker_id: str) -> None:
        self.router.mark_dead(worker_id)

    def replace_worker(self, worker_id: str, handle: Any) -> None:
        """A new actor serves `worker_id`; sessions that were on the old one are
        placed afresh and recorded lock-broken (their versions may now mix)."""
        self.workers[worker_id] = handle
        self._lock_broken.update(self.router.add_worker(worker_id))

    def _episode_spec(
        self, trajectory_id: str, group_id: str, task_seed: int, temperature: float
    ) -> EpisodeSpec:
        return episode_spec(
            self.rollout_cfg, self.env_cfg.id, trajectory_id, group_id, task_seed, temperature
        )

    async def _episode(self, episode: EpisodeSpec, purpose: str) -> Trajectory:
        trajectory_id = episode.trajectory_id
        idle = self._idle_envs[purpose]
        env = idle.pop() if idle else make_env(self.env_cfg.id, self._env_kwargs[purpose])
        self.episodes_started += 1

        async def generate(
            prompt_ids: list[int], sampling: SamplingSpec, images: list[bytes] | None = None
        ) -> Served:
            return await self._generate(trajectory_id, prompt_ids, sampling, images)

        try:
            trajectory = await asyncio.wait_for(
                run_episode(env, self.codec, generate, episode), self.env_cfg.episode_timeout_s
            )
            trajectory.lock_broken |= trajectory_id in self._lock_broken
            return trajectory
        except TimeoutError:
            log.warning("episode %s exceeded %.0fs", trajectory_id, self.env_cfg.episode_timeout_s)
            return _failed(episode, f"episode timed out after {self.env_cfg.episode_timeout_s}s")
        finally:
            self.router.end_session(trajectory_id)
            self._lock_broken.discard(trajectory_id)
            self.episodes_finished += 1
            self._idle_envs[purpose].append(env)

    async def _generate(
        self,
        session: str,
        prompt_ids: list[int],
        sampling: SamplingSpec,
        images: list[bytes] | None = None,
    ) -> Served:
        """One turn on the session's worker; on a dead worker, the next one."""
        import ray

        cost = len(prompt_ids) + sampling.max_tokens
        timeout = self.rollout_cfg.generate_timeout_s
        extra = (images,) if images else ()  # text turns call generate as before
        moved = False
        for _ in range(len(self.workers) + 1):
            try:
                placement = await self._place(session, cost)
            except NoWorkerAvailable as exc:
                log.warning("turn of %s not served: %s", session, exc)
                break
            moved = moved or placement.moved
            handle = self.workers[placement.worker_id]
            try:
                generation = await asyncio.wait_for(
                    handle.generate.remote(prompt_ids, sampling, timeout, *extra),
                    timeout + RAY_CALL_GRACE_S,
                )
                return Served(generation, placement.worker_id, moved)
            except (ray.exceptions.RayActorError, TimeoutError) as exc:
                log.warning(
                    "rollout worker %s lost (%s); moving %s",
                    placement.worker_id,
                    type(exc).__name__,
                    session,
                )
                self.router.mark_dead(placement.worker_id)
                moved = True
            finally:
                self.router.done(placement.worker_id, cost)
        aborted = Generation([], [], [], "abort", len(prompt_ids))
        return Served(aborted, "none", moved)

    async def _place(self, session: str, cost: int) -> Any:
        """Place a turn; while every worker drains for an update, wait (bounded)."""
        deadline = time.monotonic() + self.rollout_cfg.sync_timeout_s
        while True:
            try:
                return self.router.place(session, cost)
            except WorkersDraining:
                if time.monotonic() > deadline:
                    raise NoWorkerAvailable(
                        f"every rollout worker stayed draining for "
                        f"{self.rollout_cfg.sync_timeout_s:.0f}s (rollout.sync_timeout_s)"
                    ) from None
                await asyncio.sleep(DRAIN_POLL_S)


def _failed(spec: EpisodeSpec, reason: str) -> Trajectory:
    traj = Trajectory(spec.trajectory_id, spec.group_id, spec.env_id, spec.task_seed, 0)
    traj.status = Status.FAILED
    traj.failure = reason
    return traj
