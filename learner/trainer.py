"""Trainer: one DeepSpeed rank training the policy on batches of trajectories.

Owns the model and its DeepSpeed engine (ZeRO stage, precision, client AdamW
and LR schedule, gradient clipping), the train step (recompute logprobs,
algorithm loss, accumulate micro-batches, one optimizer step), the metrics of
a step (reduced over ranks), and exporting full weights as a shared-memory
snapshot. The learner Ray actor is a thin shell over this class.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.config import AlgoConfig, LearnerConfig
from core.shm import WeightSnapshot, write_snapshot
from core.types import Batch
from learner.algos import PolicyInputs, make_algorithm
from learner.batching import MicroBatch, collect_samples, plan_micro_batches

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500


def deepspeed_config(cfg: LearnerConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config for `cfg`; `cfg.deepspeed` is merged in last."""
    config: dict[str, Any] = {
        "train_batch_size": world_size,
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        # The trainer owns accumulation: a step has as many micro-batches as its
        # tokens need; backward() accumulates and step() reduces and updates.
        "managed_gradient_accumulation": False,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    return _deep_merge(config, cfg.deepspeed)


class Trainer:
    def __init__(
        self,
        model_path: str,
        cfg: LearnerConfig,
        algo: AlgoConfig,
        temperature: float = 1.0,
        rank: RankInfo | None = None,
        seed: int = 0,
    ):
        self.cfg = cfg
        self.rank = rank or RankInfo()
        self.temperature = temperature
        self.algorithm = make_algorithm(algo)
        self.version = 0
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(seed)
        self._init_distributed()
        self.engine = self._build_engine(model_path)
        self.pad_id = int(self.engine.module.config.pad_token_id or 0)

    # -- training ---------------------------------------------------------------

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on `batch`; returns metrics reduced over ranks."""
        started = time.perf_counter()
        samples = collect_samples(batch, self.algorithm)
        if not samples:
            return {"learner/skipped_empty_batch": 1.0}
        plan = plan_micro_batches(
            samples, self.cfg.micro_batch_tokens, self.rank.world_size, self.pad_id
        )
        sums: dict[str, float] = {}
        self.engine.train()
        for micro in plan[self.rank.rank :: self.rank.world_size]:
            self._accumulate(micro, sums)
        self.engine.step()
        self.version += 1
        metrics = self._reduce(sums)
        metrics["learner/grad_norm"] = float(self.engine.get_global_grad_norm() or 0.0)
        metrics["learner/lr"] = float(self.engine.get_lr()[0])
        metrics["learner/samples"] = float(len(samples))
        metrics["learner/staleness_mean"] = sum(s.staleness for s in samples) / len(samples)
        metrics["learner/staleness_max"] = float(max(s.staleness for s in samples))
        metrics["learner/micro_batches"] = float(len(plan))
        metrics["perf/learner_step_s"] = time.perf_counter() - started
        metrics["perf/learner_tokens_per_s"] = metrics["learner/tokens"] / max(
            metrics["perf/learner_step_s"], 1e-9
        )
        return metrics

    def _accumulate(self, micro: MicroBatch | None, sums: dict[str, float]) -> None:
        if micro is None:
            micro = self._empty_micro_batch()
        logprobs, entropy = self._token_logprobs(micro)
        mask = micro.loss_mask.bool()
        result = self.algorithm.loss(
            PolicyInputs(
                logprobs=logprobs[mask],
                behavior_logprobs=micro.behavior_logprobs[mask],
                advantages=micro.advantages[mask],
                weights=micro.weights[mask],
                entropy=entropy[mask],
            )
        )
        # Weights sum to 1 over the whole batch on all ranks, and DeepSpeed averages
        # gradients over ranks: scale back by the world size.
        self.engine.backward(result.loss * self.rank.world_size, scale_wrt_gas=False)
        n = float(mask.sum())
        sums["tokens"] = sums.get("tokens", 0.0) + n
        sums["loss"] = sums.get("loss", 0.0) + float(result.loss.detach())
        sums["entropy"] = sums.get("entropy", 0.0) + float(entropy[mask].sum())
        peak = float(result.stats["ratio"].max()) if n else 0.0
        sums["ratio_max"] = max(sums.get("ratio_max", 0.0), peak)
        for name, values in result.stats.items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())

    def _token_logprobs(self, micro: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.engine(
            input_ids=micro.input_ids, attention_mask=micro.attention_mask, use_cache=False
        ).logits[:, :-1]
        logits = logits.float() / self.temperature
        log_norm = torch.logsumexp(logits, dim=-1)
        logprobs = logits.gather(-1, micro.targets.unsqueeze(-1)).squeeze(-1) - log_norm
        with torch.no_grad():
            probs = torch.softmax(logits, dim=-1)
            entropy = log_norm - (probs * logits).sum(-1)
        return logprobs, entropy

    def _reduce(self, sums: dict[str, float]) -> dict[str, float]:
        ratio_max = sums.pop("ratio_max", 0.0)
        keys = sorted(sums)
        totals = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
        peak = torch.tensor([ratio_max], dtype=torch.float64)
        if self.rank.world_size > 1:
            import deepspeed.comm as dist

            dist.all_reduce(totals)
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        total = dict(zip(keys, totals.tolist(), strict=True))
        tokens = max(total.pop("tokens"), 1.0)
        metrics = {"learner/tokens": tokens, "learner/loss": total.pop("loss")}
        names = {
            "ratio": "learner/ratio_mean",
            "clipped": "learner/clip_frac",
            "kl_behavior": "learner/kl_behavior",
            "abs_logprob_diff": "learner/mismatch_abs_logprob",
            "entropy": "learner/entropy",
        }
        for key, value in total.items():
            metrics[names.get(key, f"learner/{key}")] = value / tokens
        metrics["learner/ratio_max"] = float(peak[0])
        return metrics

    def _empty_micro_batch(self) -> MicroBatch:
        ids = torch.full((1, 2), self.pad_id, dtype=torch.long)
        zeros = torch.zeros((1, 1))
        return MicroBatch(ids, torch.ones_like(ids), zeros, ids[:, 1:], zeros, zeros, zeros)

    # -- inspection and export ----------------------------------------------------

    @torch.no_grad()
    def logprobs(self, ids: list[int]) -> list[float]:
        """Logprob of each token of `ids` given its prefix, at temperature 1."""
        self.engine.eval()
        tensor = torch.tensor([ids])
        logits = self.engine(input_ids=tensor, use_cache=False).logits[0, :-1].float()
        out = torch.log_softmax(logits, -1).gather(-1, tensor[0, 1:, None])[:, 0]
        return out.tolist()

    def export_weights(self, directory: str | Path, version: int) -> WeightSnapshot | None:
        """Full weights as a shared-memory snapshot; a collective under ZeRO-3.
        Rank 0 writes and returns the snapshot, other ranks return None."""
        with self._full_parameters():
            if self.rank.rank != 0:
                return None
            state = self.engine.module.state_dict()
            path = Path(directory) / f"policy-v{version}.bin"
            return write_snapshot(path, state.items(), version)

    def save_pretrained(self, directory: str | Path) -> None:
        with self._full_parameters():
            if self.rank.rank == 0:
                self.engine.module.save_pretrained(directory)

    # -- set-up ---------------------------------------------------------------------

    def _init_distributed(self) -> None:
        import deepspeed

        os.environ.update(
            RANK=str(self.rank.rank),
            LOCAL_RANK=str(self.rank.rank),
            WORLD_SIZE=str(self.rank.world_size),
            LOCAL_WORLD_SIZE=str(self.rank.world_size),
            MASTER_ADDR=self.rank.master_addr,
            MASTER_PORT=str(self.rank.master_port),
        )
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, verbose=False)

    def _build_engine(self, model_path: str) -> Any:
        import deepspeed
        from transformers import AutoModelForCausalLM

        dtype = DTYPES[self.cfg.precision]
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        model.config.use_cache = False
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )
        warmup = max(1, self.cfg.lr_warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup)
        )
        engine, *_ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=schedule,
            config=deepspeed_config(self.cfg, self.rank.world_size),
        )
        return engine

    def _full_parameters(self) -> Any:
        import contextlib

        if self.cfg.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()))


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
