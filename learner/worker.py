"""LearnerWorker: the Ray actor around one DeepSpeed rank (a thin shell over Trainer).

Sets DeepSpeed's accelerator before DeepSpeed is imported.
"""

from __future__ import annotations

import os
from typing import Any

from core.config import AlgoConfig, LearnerConfig
from core.shm import WeightSnapshot
from core.types import Batch


class LearnerWorker:
    def __init__(
        self,
        model_path: str,
        cfg: LearnerConfig,
        algo: AlgoConfig,
        temperature: float,
        rank: int,
        world_size: int,
        master_port: int,
        seed: int,
    ):
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        from learner.setup import RankInfo
        from learner.trainer import Trainer

        self.trainer = Trainer(
            model_path,
            cfg,
            algo,
            temperature=temperature,
            rank=RankInfo(rank=rank, world_size=world_size, master_port=master_port),
            seed=seed,
        )

    def ready(self) -> int:
        return self.trainer.rank.rank

    def train_step(self, batch: Batch) -> dict[str, float]:
        return self.trainer.train_step(batch)

    def export_weights(self, directory: str, version: int) -> WeightSnapshot | None:
        return self.trainer.export_weights(directory, version)

    def logprobs(self, ids: list[int]) -> list[float]:
        return self.trainer.logprobs(ids)

    def save_pretrained(self, directory: str) -> None:
        self.trainer.save_pretrained(directory)

    def save_checkpoint(self, directory: str, tag: str) -> None:
        self.trainer.save_checkpoint(directory, tag)

    def load_checkpoint(self, directory: str, tag: str) -> int:
        return self.trainer.load_checkpoint(directory, tag)

    def fp8_plan(self) -> dict[str, list[str]] | None:
        """Which linear layers train in float8 and which stayed (precision=fp8)."""
        plan = self.trainer.fp8_plan
        return None if plan is None else {"converted": plan.converted, "kept": plan.kept}

    def health(self) -> dict[str, Any]:
        return {"rank": self.trainer.rank.rank, "version": self.trainer.version, "pid": os.getpid()}
