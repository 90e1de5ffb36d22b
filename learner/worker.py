"""LearnerWorker: the Ray actor around one DeepSpeed rank (a thin shell over Trainer).

Created in its placement seat by orchestrator.actors, then started in two calls:
rank 0 reports where the group meets (`rendezvous`: its node address and a free
port there), and every rank `start`s there. On CPU under split placement it is
bound to the cores no rollout engine on its node took, and borrows theirs while
they idle (`lend_cores`, learner/cores.py). Sets DeepSpeed's
accelerator before DeepSpeed is imported.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import ray

from core.config import AlgoConfig, LearnerConfig
from core.records import Placement
from core.shm import WeightSnapshot, snapshot_bytes
from core.types import Batch

CONCURRENCY_GROUPS = {"cores": 1}
"""`lend_cores` runs on a thread of its own, beside a running `train_step`."""


class LearnerWorker:
    def __init__(
        self,
        model_path: str,
        cfg: LearnerConfig,
        algo: AlgoConfig,
        temperature: float,
        rank: int,
        world_size: int,
        seed: int,
        cores: tuple[int, ...] | None = None,
        spare_cores: tuple[int, ...] = (),
    ):
        from learner.cores import CoreLease
        from learner.setup import pin_cores

        allowed = os.sched_getaffinity(0)
        threads = pin_cores(cores, cfg.threads)
        self.lease = (
            CoreLease(cores, spare_cores, cfg.threads, allowed) if cores and spare_cores else None
        )
        self.cfg = dataclasses.replace(cfg, threads=threads)
        self.args = (model_path, algo, temperature, seed)
        self.rank, self.world_size = rank, world_size
        self.trainer: Any = None

    def rendezvous(self) -> tuple[str, int]:
        """This rank's node address and a port free there (asked of rank 0)."""
        from learner.setup import rendezvous_address

        return rendezvous_address()

    def start(self, master_addr: str, master_port: int) -> int:
        """Join the process group at rank 0's address and build the trainer."""
        from learner.setup import RankInfo, trains_on_cpu

        if trains_on_cpu():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        from learner.trainer import Trainer

        model_path, algo, temperature, seed = self.args
        rank = RankInfo(self.rank, self.world_size, master_addr, master_port)
        self.trainer = Trainer(
            model_path, self.cfg, algo, temperature, rank, seed, cores=self.lease
        )
        return self.rank

    def ready(self) -> int:
        return self.trainer.rank.rank

    def placement(self) -> Placement:
        return Placement.here()

    def thread_cores(self) -> tuple[int, ...]:
        """The cores any thread of this process may run on now (its pin, or its pin
        and the borrowed cores while a step borrows them)."""
        from learner.cores import thread_cores

        return tuple(sorted(thread_cores()))

    def sees(self, directory: str) -> bool:
        """Whether `directory` exists from this rank's node (shared checkpoint storage)."""
        return Path(directory).is_dir()

    def train_step(self, batch: Batch) -> dict[str, float]:
        return self.trainer.train_step(batch)

    @ray.method(concurrency_group="cores")
    def lend_cores(self, step: int) -> bool:
        """The rollout engines on this node idle until learner step `step` ends: take
        their cores for it (runs beside `train_step`, on its own thread). Returns
        whether this rank has cores to borrow."""
        if self.lease is None:
            return False
        self.lease.offer(step)
        return True

    def export_weights(
        self, directory: str, version: int, served_dtype: str | None = None
    ) -> WeightSnapshot | None:
        """The snapshot (rank 0), labelled with the node whose shared memory holds it."""
        snapshot = self.trainer.export_weights(directory, version, served_dtype)
        if snapshot is None:
            return None
        return dataclasses.replace(snapshot, node_id=Placement.here().node_id)

    def snapshot_payload(self, snapshot: WeightSnapshot) -> Any:
        """The snapshot's bytes, returned into Ray's object store for workers on other
        nodes (the caller owns the object: it outlives this rank)."""
        return snapshot_bytes(snapshot)

    def logprobs(self, ids: list[int]) -> list[float]:
        return self.trainer.logprobs(ids)

    def save_pretrained(self, directory: str) -> None:
        self.trainer.save_pretrained(directory)

    def save_checkpoint(self, directory: str, tag: str) -> None:
        self.trainer.save_checkpoint(directory, tag)

    def load_checkpoint(self, directory: str, tag: str) -> int:
        return self.trainer.load_checkpoint(directory, tag)

    def fp8_plan(self) -> dict[str, Any] | None:
        """Which linear layers train in float8 and which stayed (precision=fp8)."""
        plan = self.trainer.fp8_plan
        return None if plan is None else dataclasses.asdict(plan)

    def health(self) -> dict[str, Any]:
        return {"rank": self.trainer.rank.rank, "version": self.trainer.version, "pid": os.getpid()}
