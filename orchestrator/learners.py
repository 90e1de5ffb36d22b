"""The learner: its DeepSpeed ranks (Ray actors) and their restoration.

`LearnerGroup` calls every rank (steps, exports and checkpoints are collectives)
and returns rank 0's answer; each call is bounded by learner.step_timeout_s.
`Learner` is what a run uses: the group plus one retry helper, `_restoring`,
which replaces ranks that died with new ones restored from the run's newest
checkpoint and retries the call (at most supervisor.max_restarts times). Versions
keep counting across a restore: what the restored learner exports next is new.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.config import Config
from core.shm import WeightSnapshot
from core.types import Batch
from core.waits import bounded
from orchestrator import actors
from orchestrator.checkpoint import LEARNER_TAG, checkpoint_root, latest

log = logging.getLogger(__name__)
T = TypeVar("T")
LEND_POLL_S = 0.02
"""How often a running learner step looks whether the engines went idle."""


class CheckpointUnreachable(RuntimeError):
    """A learner rank's node cannot see the checkpoint directory (not shared storage)."""


@dataclass
class LearnerGroup:
    """The DeepSpeed ranks of the learner, one Ray actor each."""

    cfg: Config
    ranks: list[Any]
    borrows: bool = False
    """Some rank has engine cores to borrow while they idle (CPU, split, async)."""

    @classmethod
    async def start(cls, cfg: Config, model_path: str) -> LearnerGroup:
        """Ranks in their placement seats, meeting at rank 0's node address."""
        borrows = any(actors.reserve(cfg).cores(cfg).learner_spare)
        group = cls(cfg, actors.learner_ranks(cfg, model_path), borrows)
        address = await bounded(
            group.ranks[0].rendezvous.remote(),
            cfg.learner.startup_timeout_s,
            "learner rank 0 to report its node address and a free port",
        )
        await bounded(
            asyncio.gather(*[r.start.remote(*address) for r in group.ranks]),
            cfg.learner.startup_timeout_s,
            f"{len(group.ranks)} DeepSpeed learner rank(s) to start at {address[0]}:{address[1]}",
        )
        return group

    async def train_step(
        self, batch: Batch, engines_idle: Callable[[], bool] | None = None
    ) -> dict[str, float]:
        """One step on every rank. With `engines_idle`, the ranks borrow the rollout
        engines' cores on their node once it says the engines have nothing to do
        until the step ends (learner.borrow_idle_cores)."""
        calls = [r.train_step.remote(batch) for r in self.ranks]
        step = asyncio.ensure_future(
            self._rank0(calls, f"learner step at version {batch.learner_version}")
        )
        if engines_idle is not None and self.borrows:
            await self._lend_when_idle(step, engines_idle, batch.learner_version)
        return await step

    async def _lend_when_idle(
        self, step: asyncio.Future, engines_idle: Callable[[], bool], version: int
    ) -> None:
        """Until `step` ends, look every LEND_POLL_S whether the engines idle; once
        they do, offer their cores to every rank for this step (no answer awaited)."""
        while not step.done():
            if engines_idle():
                for rank in self.ranks:
                    rank.lend_cores.remote(version)
                return
            await asyncio.wait({step}, timeout=LEND_POLL_S)

    async def export_weights(self, directory: Path, version: int) -> WeightSnapshot:
        served = self.cfg.model.dtype
        calls = [r.export_weights.remote(str(directory), version, served) for r in self.ranks]
        return await self._rank0(calls, f"learner to export weights v{version}")

    async def logprobs(self, ids: list[int]) -> list[float]:
        return await self._rank0([r.logprobs.remote(ids) for r in self.ranks], "learner logprobs")

    async def save_pretrained(self, directory: str) -> None:
        calls = [r.save_pretrained.remote(directory) for r in self.ranks]
        await self._rank0(calls, "learner to save a checkpoint")

    async def save_checkpoint(self, directory: str, tag: str) -> None:
        calls = [r.save_checkpoint.remote(directory, tag) for r in self.ranks]
        await self._rank0(calls, f"learner checkpoint {tag}")

    async def load_checkpoint(self, directory: str, tag: str) -> int:
        await self.check_sees(directory)
        calls = [r.load_checkpoint.remote(directory, tag) for r in self.ranks]
        return await self._rank0(calls, f"learner to load checkpoint {tag}")

    async def check_sees(self, directory: str) -> None:
        """Refuse, in one line, a checkpoint directory some rank's node cannot see."""
        seen = await self._all([r.sees.remote(directory) for r in self.ranks], "ranks to look")
        blind = [rank for rank, sees in enumerate(seen) if not sees]
        if blind:
            raise CheckpointUnreachable(
                f"learner rank(s) {blind} cannot see the checkpoint {directory} from their "
                "node: trainer.checkpoint_dir must be storage every learner node mounts"
            )

    def kill(self) -> None:
        for rank in self.ranks:
            actors.kill(rank)

    async def _rank0(self, calls: list[Any], what: str) -> Any:
        return (await self._all(calls, what))[0]

    async def _all(self, calls: list[Any], what: str) -> list[Any]:
        return await bounded(asyncio.gather(*calls), self.cfg.learner.step_timeout_s, what)


@dataclass
class Learner:
    """The run's learner group, restored from the newest checkpoint when a rank dies."""

    cfg: Config
    model_path: str
    group: LearnerGroup
    weights_dir: Path
    """Where exported weight snapshots are written (shared memory on CPU)."""
    restarts: int = 0
    export_s: float = 0.0
    """How long the last export took."""

    @classmethod
    async def start(cls, cfg: Config, model_path: str, weights_dir: Path) -> Learner:
        return cls(cfg, model_path, await LearnerGroup.start(cfg, model_path), weights_dir)

    async def train_step(
        self, batch: Batch, engines_idle: Callable[[], bool] | None = None
    ) -> dict[str, float]:
        return await self._restoring(lambda g: g.train_step(batch, engines_idle), "a train step")

    async def export_weights(self, version: int) -> WeightSnapshot:
        started = time.perf_counter()
        snapshot = await self._restoring(
            lambda g: g.export_weights(self.weights_dir, version), f"exporting v{version}"
        )
        self.export_s = time.perf_counter() - started
        return snapshot

    def payload(self, snapshot: WeightSnapshot) -> Any:
        """A ref to `snapshot`'s bytes in Ray's object store, put there by rank 0 (for
        rollout workers on other nodes; owned by this driver, so it outlives rank 0)."""
        return self.group.ranks[0].snapshot_payload.remote(snapshot)

    async def logprobs(self, ids: list[int]) -> list[float]:
        return await self._restoring(lambda g: g.logprobs(ids), "logprobs")

    async def save_pretrained(self, directory: str) -> None:
        await self._restoring(lambda g: g.save_pretrained(directory), "saving the policy")

    async def save_checkpoint(self, directory: Path) -> None:
        where = str(directory / "learner")
        await self._restoring(lambda g: g.save_checkpoint(where, LEARNER_TAG), "a checkpoint")

    async def load_checkpoint(self, directory: Path) -> int:
        return await self.group.load_checkpoint(str(directory / "learner"), LEARNER_TAG)

    async def restart(self) -> None:
        """New ranks, restored from the run's newest checkpoint (or the initial
        policy when there is none)."""
        self.group.kill()
        self.group = await LearnerGroup.start(self.cfg, self.model_path)
        self.restarts += 1
        checkpoint = latest(checkpoint_root(self.cfg))
        if checkpoint is None:
            log.error("learner restarted from the initial policy: no checkpoint yet")
            return
        await self.load_checkpoint(checkpoint)
        log.warning("learner restored from %s", checkpoint)

    def stats(self) -> dict[str, float]:
        return {"fault/learner_restarts": float(self.restarts), "sync/export_s": self.export_s}

    def kill(self) -> None:
        self.group.kill()

    async def _restoring(self, call: Callable[[LearnerGroup], Awaitable[T]], what: str) -> T:
        """`call` on the group; when a rank has died, restore the learner and retry
        (up to supervisor.max_restarts times, then stop with a clear error)."""
        import ray

        attempt = 0
        while True:
            try:
                return await call(self.group)
            except ray.exceptions.RayActorError as exc:
                if attempt >= self.cfg.supervisor.max_restarts:
                    raise RuntimeError(
                        f"the learner died {attempt + 1} times (last: {exc}); stopping"
                    ) from exc
                log.error("learner rank lost during %s (%s); restoring the learner", what, exc)
                await self.restart()
                attempt += 1
