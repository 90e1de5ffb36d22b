"""Rollout routing replay (R3) for MoE policies.

The engine and the learner compute a MoE layer's router in different kernels,
so near-ties between experts can route a token differently in the two: the
learner then trains a computation the sampler never ran. With routing replay
the learner's MoE layers use the experts the engine chose (recorded per token
by vLLM), while the mixing weights still come from the learner's own router
softmax over those experts, so the router keeps learning.

`RoutingReplay(model)` takes over every router of a transformers Qwen3-MoE
model (`Qwen3MoeTopKRouter`): inside `replaying(indices, mask)` a token whose
mask is set is routed to the given experts; elsewhere, and outside the
context, the router runs as usual. `recording()` captures what the learner's
own routers chose (tests, and a check that replay is exact).

The engine's routing has one column per decoder layer, dense layers included:
vLLM sizes it by the model's hidden layers
(vllm/model_executor/layers/fused_moe/routed_experts_capturer.py:30-41, 67) and
each MoE layer writes the column of its decoder-layer index
(fused_moe/runner/moe_runner.py:947-952, routed_experts_capturer.py:183, 218-226).
So each router here reads the column of the decoder layer it sits in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def is_moe_router(module: torch.nn.Module) -> bool:
    return type(module).__name__.endswith("TopKRouter")


def decoder_layer(module_name: str) -> int:
    """The decoder-layer index in a module's name (`model.layers.3.mlp.gate` -> 3)."""
    parts = module_name.split(".")
    for before, part in zip(parts, parts[1:], strict=False):
        if before == "layers" and part.isdigit():
            return int(part)
    raise ValueError(f"no decoder-layer index in the module name {module_name!r}")


class RoutingReplay:
    def __init__(self, model: torch.nn.Module):
        named = [(name, m) for name, m in model.named_modules() if is_moe_router(m)]
        self.routers = [m for _, m in named]
        self.layers = [decoder_layer(name) for name, _ in named]
        """The decoder layer of each router: the column of the engine's routing it reads."""
        self.num_decoder_layers = model.config.get_text_config().num_hidden_layers
        self._indices: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._recorded: list[torch.Tensor] | None = None
        for router, layer in zip(self.routers, self.layers, strict=True):
            router.forward = self._routed_forward(layer, router)

    @property
    def num_layers(self) -> int:
        """MoE layers (0 for a dense model)."""
        return len(self.routers)

    @contextlib.contextmanager
    def replaying(self, indices: torch.Tensor, mask: torch.Tensor) -> Iterator[None]:
        """Route flat token i of the next forwards to `indices[i, layer]` ([tokens,
        decoder layers, k], token order of the input batch flattened) where
        `mask[i]`; columns of dense layers are not read."""
        if indices.shape[1] != self.num_decoder_layers:
            raise ValueError(
                f"routing for {indices.shape[1]} layers, the model has "
                f"{self.num_decoder_layers} decoder layers"
            )
        self._indices, self._mask = indices.long(), mask.bool()
        try:
            yield
        finally:
            self._indices = self._mask = None

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[torch.Tensor]]:
        """Collect each MoE layer's chosen experts ([tokens, k]) in layer order
        (one entry per router: dense layers have none)."""
        self._recorded = []
        try:
            yield self._recorded
        finally:
            self._recorded = None

    def _routed_forward(self, layer: int, router: Any) -> Any:
        def forward(hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
            hidden_states = hidden_states.reshape(-1, router.hidden_dim)
            logits = torch.nn.functional.linear(hidden_states, router.weight)
            probs = torch.softmax(logits, dtype=torch.float, dim=-1)
            _, chosen = torch.topk(probs, router.top_k, dim=-1)
            if self._indices is not None:
                replayed = self._indices[:, layer].to(chosen.device)
                chosen = torch.where(self._mask.to(chosen.device)[:, None], replayed, chosen)
            scores = probs.gather(-1, chosen)
            if getattr(router, "norm_topk_prob", True):  # Qwen3.5-MoE's router always
                # normalises (transformers/models/qwen3_5_moe/modeling_qwen3_5_moe.py:888)
                scores = scores / scores.sum(dim=-1, keepdim=True)
            if self._recorded is not None:
                self._recorded.append(chosen.detach().clone())
            return logits, scores.to(logits.dtype), chosen

        return forward
