"""Trainer: one DeepSpeed rank training the policy on batches of trajectories.

Owns the train step (recompute logprobs, algorithm loss, accumulate
micro-batches, one optimizer step), the metrics of a step (reduced over ranks),
exporting full weights as a shared-memory snapshot, and checkpoints of the rank.
Building the DeepSpeed engine and the process group is learner/setup.py's.
The learner Ray actor is a thin shell over this class.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from core.config import AlgoConfig, LearnerConfig
from core.shm import WeightSnapshot, write_snapshot
from core.types import Batch
from learner.algos import PolicyInputs, make_algorithm
from learner.batching import MicroBatch, Sample, collect_samples, plan_micro_batches
from learner.cores import CoreLease
from learner.routing_replay import RoutingReplay
from learner.setup import (
    RankInfo,
    build_engine,
    init_distributed,
    reference_model,
    restore_rng,
    rng_states,
)
from learner.shared_prefix import forward_logits, supports_shared_prefix
from learner.vision import embeds_with_images, pixel_inputs_for

log = logging.getLogger(__name__)


class Trainer:
    def __init__(
        self,
        model_path: str,
        cfg: LearnerConfig,
        algo: AlgoConfig,
        temperature: float = 1.0,
        rank: RankInfo | None = None,
        seed: int = 0,
        cores: CoreLease | None = None,
    ):
        self.cfg = cfg
        self.cores = cores
        """Cores this rank may borrow while the engines idle (None: only its own)."""
        self.rank = rank or RankInfo()
        self.temperature = temperature
        self.algorithm = make_algorithm(algo)
        self.model_path = model_path
        self.version = 0
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(seed)
        init_distributed(self.rank)
        self.engine, self.fp8_plan = build_engine(model_path, cfg, self.rank.world_size)
        self.pad_id = int(self.engine.module.config.pad_token_id or 0)
        self.routing_replay = self._routing_replay()
        self.reference = reference_model(model_path, cfg) if algo.kl_coef > 0 else None
        self.share_prefix = cfg.share_prefix and supports_shared_prefix(self.engine.module)
        self.pixels = pixel_inputs_for(model_path, self.engine.module)
        if self.cores is not None:
            self.cores.install(self.engine.module)

    # -- training ---------------------------------------------------------------

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on `batch`; returns metrics reduced over ranks."""
        started, cpu_started = time.perf_counter(), time.process_time()
        samples = collect_samples(batch, self.algorithm)
        if not samples:
            return {"learner/skipped_empty_batch": 1.0}
        plan = plan_micro_batches(
            samples,
            self.cfg.micro_batch_tokens,
            self.rank.world_size,
            self.pad_id,
            self.algorithm.loss_agg,
            self.share_prefix,
        )
        sums: dict[str, float] = {}
        own = plan[self.rank.rank :: self.rank.world_size]
        if self.cores is not None:
            self.cores.begin(batch.learner_version)
        try:
            kept_scale = self._kept_scale(own, samples)
            self.engine.train()
            for micro in own:
                self._borrow_if_offered()
                self._accumulate(micro, sums, kept_scale)
            self._borrow_if_offered()
            self.engine.step()
        finally:
            if self.pixels is not None:
                self.pixels.forget()
            borrowed_s = self.cores.give_back() if self.cores is not None else 0.0
        self.version += 1
        metrics = self._reduce(sums)
        metrics["learner/grad_norm"] = float(self.engine.get_global_grad_norm() or 0.0)
        metrics["learner/lr"] = float(self.engine.get_lr()[0])
        metrics["learner/samples"] = float(len(samples))
        metrics["learner/staleness_mean"] = sum(s.staleness for s in samples) / len(samples)
        metrics["learner/staleness_max"] = float(max(s.staleness for s in samples))
        metrics["learner/micro_batches"] = float(len(plan))
        metrics["learner/forward_tokens"] = float(sum(m.forward_tokens for m in plan if m))
        metrics["perf/learner_step_s"] = time.perf_counter() - started
        metrics["perf/learner_borrowed_s"] = borrowed_s
        metrics["perf/learner_cores_busy"] = (time.process_time() - cpu_started) / max(
            metrics["perf/learner_step_s"], 1e-9
        )
        metrics["perf/learner_tokens_per_s"] = metrics["learner/tokens"] / max(
            metrics["perf/learner_step_s"], 1e-9
        )
        return metrics

    def _borrow_if_offered(self) -> None:
        if self.cores is not None:
            self.cores.take_if_offered()

    def _accumulate(
        self, micro: MicroBatch | None, sums: dict[str, float], kept_scale: float
    ) -> None:
        if micro is None:
            micro = self._empty_micro_batch()
        logprobs, entropy = self._token_logprobs(micro)
        mask = micro.loss_mask.bool()
        rows = torch.arange(mask.shape[0]).unsqueeze(1).expand_as(mask)
        result = self.algorithm.loss(
            PolicyInputs(
                logprobs=logprobs[mask],
                behavior_logprobs=micro.behavior_logprobs[mask],
                advantages=micro.advantages[mask],
                weights=micro.weights[mask],
                entropy=entropy[mask],
                sequence_ids=rows[mask],
                reference_logprobs=None if self.reference is None else self._reference(micro)[mask],
                kept_scale=kept_scale,
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
        with self._replaying(micro):
            logits = forward_logits(
                self.engine,
                micro.input_ids,
                micro.attention_mask,
                micro.prefixes,
                self._with_images(self.engine, micro),
            )
        return token_logprobs(
            logits, micro.targets, self.temperature, entropy_grad=bool(self.algorithm.entropy_coef)
        )

    @torch.no_grad()
    def _kept_scale(self, own: list[MicroBatch | None], samples: list[Sample]) -> float:
        """All loss tokens / tokens the loss keeps, over the whole batch. Only MIS with
        token-mean needs it (its mask is decided by the forward pass, and the batch's
        denominator must be known before the first backward): one extra forward pass
        per micro-batch, without a graph. Everything else: 1."""
        if not (self.algorithm.masks_tokens and self.algorithm.loss_agg == "token-mean"):
            return 1.0
        kept = 0.0
        self.engine.eval()
        for micro in own:
            micro = micro or self._empty_micro_batch()  # ZeRO-3 gathers on every rank
            logprobs, _ = self._token_logprobs(micro)
            mask = micro.loss_mask.bool()
            kept += float(self.algorithm.kept(logprobs[mask], micro.behavior_logprobs[mask]).sum())
        total = torch.tensor([kept], dtype=torch.float64)
        if self.rank.world_size > 1:
            import deepspeed.comm as dist

            dist.all_reduce(total)
        tokens = sum(sum(s.loss_mask) for s in samples)
        return tokens / max(float(total[0]), 1.0)

    @torch.no_grad()
    def _reference(self, micro: MicroBatch) -> torch.Tensor:
        logits = forward_logits(
            self.reference,
            micro.input_ids,
            micro.attention_mask,
            micro.prefixes,
            self._with_images(self.reference, micro),
        )
        logits = logits.float() / self.temperature
        picked = logits.gather(-1, micro.targets.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)

    def _with_images(self, model: Any, micro: MicroBatch) -> torch.Tensor | None:
        """The micro-batch's input embeddings with its images merged in, for `model`
        (learner.vision); None for a text micro-batch."""
        if micro.images is None:
            return None
        if self.pixels is None:
            raise ValueError(
                "trajectories with images need a vision-language policy (model.path to "
                "one, or model=tiny_vl); this policy reads text only"
            )
        first = torch.zeros_like(micro.loss_mask[:, :1], dtype=torch.bool)
        generated = torch.cat([first, micro.loss_mask.bool()], dim=1)  # input-aligned
        return embeds_with_images(model, micro.input_ids, generated, self.pixels(micro.images))

    def _replaying(self, micro: MicroBatch) -> Any:
        """Routing replay for this forward when the model is MoE, replay is on and
        the micro-batch carries the engine's routing; otherwise nothing."""
        import contextlib

        if self.routing_replay is None or micro.routing is None:
            return contextlib.nullcontext()
        rows, width, layers, k = micro.routing.shape
        return self.routing_replay.replaying(
            micro.routing.view(rows * width, layers, k), micro.routing_mask.view(-1)
        )

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
            "is_weight": "learner/is_weight_mean",
            "is_masked": "learner/is_masked_frac",
            "dual_clipped": "learner/dual_clip_frac",
            "kl_reference": "learner/kl_reference",
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

    def export_weights(
        self, directory: str | Path, version: int, served_dtype: str | None = None
    ) -> WeightSnapshot | None:
        """Full weights as a shared-memory snapshot; a collective under ZeRO-3.
        Rank 0 writes and returns the snapshot, other ranks return None. With the
        engines' `served_dtype`, each tensor wider than it also gets its checksum in
        it, so bf16 engines can confirm what they hold (core.shm)."""
        with self._full_parameters():
            if self.rank.rank != 0:
                return None
            state = self.engine.module.state_dict()
            path = Path(directory) / f"policy-v{version}.bin"
            return write_snapshot(path, state.items(), version, served_dtype)

    def save_pretrained(self, directory: str | Path) -> None:
        with self._full_parameters():
            if self.rank.rank == 0:
                self.engine.module.save_pretrained(directory)

    # -- checkpoints ------------------------------------------------------------------

    def save_checkpoint(self, directory: str | Path, tag: str) -> None:
        """DeepSpeed's checkpoint (weights, optimizer and LR-schedule state, per-rank
        partitions) plus the version and this rank's RNG states; a collective."""
        client_state = {"version": self.version, "rng": rng_states()}
        self.engine.save_checkpoint(str(directory), tag=tag, client_state=client_state)

    def load_checkpoint(self, directory: str | Path, tag: str) -> int:
        """Restore what `save_checkpoint` wrote; returns the restored version."""
        path, client_state = self.engine.load_checkpoint(str(directory), tag=tag)
        if path is None:
            raise FileNotFoundError(f"no learner checkpoint {tag!r} under {directory}")
        self.version = int(client_state["version"])
        restore_rng(client_state["rng"])
        return self.version

    def _routing_replay(self) -> RoutingReplay | None:
        if not self.cfg.routing_replay:
            return None
        replay = RoutingReplay(self.engine.module)
        return replay if replay.num_layers else None

    def _full_parameters(self) -> Any:
        import contextlib

        if self.cfg.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()))


def token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, entropy_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each target's logprob under softmax(logits / temperature), and the entropy of
    that distribution at each position: with its gradient when `entropy_grad` (an
    entropy bonus must reach the weights), as a detached metric otherwise (no graph,
    no extra memory)."""
    logits = logits.float() / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_norm
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        probs = torch.softmax(logits, dim=-1)
        entropy = log_norm - (probs * logits).sum(-1)
    return logprobs, entropy if entropy_grad else entropy.detach()
