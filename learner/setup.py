"""Setting up one learner rank: the process group, the DeepSpeed engine around the
policy (precision, client AdamW, LR schedule, ZeRO config), the frozen reference
policy for a KL penalty, and the rank's RNG state for exact resumes.

Knows nothing of batches or losses (learner/trainer.py).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from core.config import LearnerConfig
from learner.cores import bind_threads

DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp8": torch.float32,
    "fp8_bf16": torch.bfloat16,
}
"""The dtype parameters are kept in; under fp8 the float8 casts happen inside
the converted linear layers (learner/fp8.py) and the rest stays fp32; under
fp8_bf16 the rest is bf16, with DeepSpeed's bf16 mode keeping fp32 master weights."""
FLOAT8 = ("fp8", "fp8_bf16")
"""Precisions whose transformer-block linear layers train in float8."""
BF16_ENGINE = ("bf16", "fp8_bf16")
"""Precisions DeepSpeed runs in its bf16 mode (bf16 parameters, fp32 master copy)."""


def trains_on_cpu() -> bool:
    """The learner's device rule, its one owner: a rank trains on CUDA (NCCL) where
    CUDA is, else on CPU (gloo, DeepSpeed's CPU accelerator, emulated float8)."""
    return not torch.cuda.is_available()


@dataclass(frozen=True)
class RankInfo:
    """A rank's place in the process group and where the group meets: rank 0's node
    address and a port free there (`rendezvous_address`, asked of rank 0). The
    loopback default serves only a lone rank built outside Ray."""

    rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500


def rendezvous_address() -> tuple[str, int]:
    """This node's address as Ray knows it and a TCP port free on it: where the other
    ranks meet this one (a rank on another node cannot reach a loopback address)."""
    import socket

    import ray

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    return ray.util.get_node_ip_address(), port


def pin_cores(cores: tuple[int, ...] | None, threads: int) -> int:
    """Bind every thread of this process to `cores` (those of them it may run on;
    none: unchanged) and return the torch threads to use: `threads`, at most one per
    core it is bound to. Every thread: Ray runs the actor's methods on threads of
    its own, and torch's OpenMP workers inherit the mask of the thread that made them."""
    if not cores:
        return threads
    usable = bind_threads(cores, os.sched_getaffinity(0))
    if not usable:
        return threads
    return max(1, min(threads, len(usable)))


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
        "bf16": {"enabled": cfg.precision in BF16_ENGINE},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    return _deep_merge(config, cfg.deepspeed)


def lr_factor(cfg: LearnerConfig, step: int) -> float:
    """The LR multiplier at optimizer step `step`: linear warm-up, then constant
    or cosine decay to `lr_min_ratio`."""
    warmup = max(1, cfg.lr_warmup_steps)
    if step + 1 < warmup or cfg.lr_schedule == "constant":
        return min(1.0, (step + 1) / warmup)
    span = max(1, cfg.lr_decay_steps - warmup)
    progress = min(1.0, (step + 1 - warmup) / span)
    return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def skip_cpu_shm_op() -> None:
    """Keep DeepSpeed from JIT-building its CPU shared-memory all-reduce op.

    On CPU, DeepSpeed compiles that op (ninja + gcc) at every rank start, inside a
    lock file that torch removes only on a clean exit: a rank killed while it holds
    the lock (a chaos kill, a Ray shutdown mid-start) leaves the file behind and
    every later start on the machine waits on it forever. The op serves only
    `inference_all_reduce`, which training never calls (gradients go through
    torch.distributed on gloo), so it is marked unbuildable.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def init_distributed(rank: RankInfo) -> None:
    import deepspeed

    os.environ.update(
        RANK=str(rank.rank),
        LOCAL_RANK=str(rank.rank),
        WORLD_SIZE=str(rank.world_size),
        LOCAL_WORLD_SIZE=str(rank.world_size),
        MASTER_ADDR=rank.master_addr,
        MASTER_PORT=str(rank.master_port),
    )
    if trains_on_cpu():
        skip_cpu_shm_op()
    backend = "gloo" if trains_on_cpu() else "nccl"
    deepspeed.init_distributed(dist_backend=backend, verbose=False)


def build_engine(model_path: str, cfg: LearnerConfig, world_size: int) -> tuple[Any, Any]:
    """The DeepSpeed engine around the policy at `model_path`, and the fp8 plan
    (learner.precision=fp8 or fp8_bf16; None otherwise)."""
    import deepspeed

    from learner.vision import load_policy

    model = load_policy(model_path, DTYPES[cfg.precision])
    fp8_plan = None
    if cfg.precision in FLOAT8:
        from learner.fp8 import convert_to_fp8

        fp8_plan = convert_to_fp8(model, emulate=trains_on_cpu())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step))
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=deepspeed_config(cfg, world_size),
    )
    return engine, fp8_plan


def reference_model(model_path: str, cfg: LearnerConfig) -> torch.nn.Module:
    """A frozen copy of the initial policy for the KL penalty (loaded whole on
    every rank: fine for small policies, a memory cost for large ones)."""
    from learner.vision import load_policy

    model = load_policy(model_path, DTYPES[cfg.precision])
    model.requires_grad_(False)
    return model.eval()


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def rng_states() -> dict[str, Any]:
    import random

    import numpy as np

    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(states: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
