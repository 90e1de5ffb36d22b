"""FP8 mixed precision for the learner (`learner.precision=fp8`), via torchao.

The transformer blocks' linear layers (attention q/k/v/o projections, dense MLP
up/gate/down projections) train in float8: e4m3 for weights and
activations in the forward pass, e5m2 for gradients, dynamic per-tensor scales
(torchao's `convert_to_float8_training`). The layers that are sensitive to
precision keep their higher-precision dtype: token embeddings, the LM head, all
norms and the MoE router gates (a misrouted token is a different computation).
transformers keeps a MoE layer's experts as fused 3-D tensors, not linear
layers; float8 grouped GEMMs for them are a GPU recipe, so they stay too.
Layers whose shapes `_scaled_mm` cannot take (dimensions not multiples of 16)
stay too, and are listed. torch 2.13 runs `_scaled_mm` on CPU, so the recipe
trains here; its speed-up needs a GPU with FP8 tensor cores.

A learner that trains on CPU emulates the float8 matmuls (torchao's
`Float8LinearConfig.emulate`: an fp32 matmul of the float8-rounded operands over
their scales, torchao/float8/float8_ops.py:382-385), which is the arithmetic of a
float8 GEMM with fp32 accumulation; no CPU has float8 matrix units. torch's own
CPU `_scaled_mm` does the same (aten/src/ATen/native/Blas.cpp
`_scaled_mm_out_cpu_emulated`) except on a CPU with AMX, where it hands the
product to oneDNN (`_scaled_mm_out_cpu`: same-dtype operands and
`cpuinfo_has_x86_amx_int8()`), and torch 2.13's oneDNN 3.12 runs an e4m3 x e4m3
product on its reference kernel (`ref:any` under ONEDNN_VERBOSE): 2.9 s for a
2048x128x384 forward matmul that the emulation does in 0.03 s, with the same
result. On such a machine one fp8 learner step of the tiny policy took minutes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

KEPT_NAMES = ("lm_head", "embed_tokens")
"""Modules kept in high precision by name (anywhere in the module path)."""
FP8_ALIGNMENT = 16


@dataclass
class Fp8Plan:
    converted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Every other linear layer, with the reason it stayed."""
    emulated: bool = False
    """The float8 matmuls run as fp32 matmuls of float8-rounded operands (CPU)."""


def is_router_gate(name: str, module: torch.nn.Module) -> bool:
    """A MoE router: Qwen3-MoE's `mlp.gate` (a dense MLP's is `mlp.gate_proj`)."""
    return name.endswith("mlp.gate") or type(module).__name__.endswith("Router")


def plan_fp8(model: torch.nn.Module) -> Fp8Plan:
    """Which linear layers train in float8 and which stay, and why."""
    plan = Fp8Plan()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding):
            plan.kept.append(f"{name} (embedding)")
            continue
        if type(module).__name__.endswith("RMSNorm") or isinstance(module, torch.nn.LayerNorm):
            plan.kept.append(f"{name} (norm)")
            continue
        if is_router_gate(name, module):
            plan.kept.append(f"{name} (MoE router)")
            continue
        if type(module).__name__.endswith("Experts"):
            plan.kept.append(f"{name} (fused experts: float8 grouped GEMMs need a GPU)")
            continue
        if not isinstance(module, torch.nn.Linear):
            continue
        if any(part in name for part in KEPT_NAMES):
            plan.kept.append(f"{name} (embedding/head)")
        elif module.in_features % FP8_ALIGNMENT or module.out_features % FP8_ALIGNMENT:
            plan.kept.append(f"{name} (shape not a multiple of {FP8_ALIGNMENT})")
        else:
            plan.converted.append(name)
    return plan


def convert_to_fp8(model: torch.nn.Module, *, emulate: bool) -> Fp8Plan:
    """Swap the planned linear layers for torchao Float8Linear in place. `emulate`:
    run their float8 matmuls emulated (see the module docstring); the learner asks
    for it where it trains on CPU (learner.setup.trains_on_cpu)."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    plan = plan_fp8(model)
    plan.emulated = emulate
    chosen = set(plan.converted)
    convert_to_float8_training(
        model,
        module_filter_fn=lambda _, fqn: fqn in chosen,
        config=Float8LinearConfig(emulate=plan.emulated),
    )
    log.warning(
        "fp8: %d linear layers train in float8%s (%s); kept in high precision: %s",
        len(plan.converted),
        " (matmuls emulated in fp32: CPU)" if plan.emulated else "",
        ", ".join(compact(plan.converted)),
        ", ".join(compact(plan.kept)) or "none",
    )
    return plan


def compact(names: list[str]) -> list[str]:
    """Module names with layer indices folded: model.layers.*.mlp.up_proj, in order."""
    folded = (re.sub(r"\.layers\.\d+\.", ".layers.*.", name) for name in names)
    return list(dict.fromkeys(folded))
