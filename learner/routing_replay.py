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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def is_moe_router(module: torch.nn.Module) -> bool:
    return type(module).__name__.endswith("TopKRouter")


class RoutingReplay:
    def __init__(self, model: torch.nn.Module):
        self.routers = [m for m in model.modules() if is_moe_router(m)]
        self._indices: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._recorded: list[torch.Tensor] | None = None
        for layer, router in enumerate(self.routers):
            router.forward = self._routed_forward(layer, router)

    @property
    def num_layers(self) -> int:
        return len(self.routers)

    @contextlib.contextmanager
    def replaying(self, indices: torch.Tensor, mask: torch.Tensor) -> Iterator[None]:
        """Route flat token i of the next forwards to `indices[i, layer]` ([tokens,
        layers, k], token order of the input batch flattened) where `mask[i]`."""
        if indices.shape[1] != self.num_layers:
            raise ValueError(
                f"routing for {indices.shape[1]} MoE layers, the model has {self.num_layers}"
            )
        self._indices, self._mask = indices.long(), mask.bool()
        try:
            yield
        finally:
            self._indices = self._mask = None

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[torch.Tensor]]:
        """Collect each MoE layer's chosen experts ([tokens, k]) in layer order."""
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
            if router.norm_topk_prob:
                scores = scores / scores.sum(dim=-1, keepdim=True)
            if self._recorded is not None:
                self._recorded.append(chosen.detach().clone())
            return logits, scores.to(logits.dtype), chosen

        return forward
