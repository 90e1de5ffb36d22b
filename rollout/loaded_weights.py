"""What a vLLM model holds for each learner tensor after a weight update, as
core.digest checksums; runs inside vLLM's worker process (rollout.transport).

vLLM keeps the learner's tensors in its own layout, so each learner tensor is
found as a slice of a vLLM parameter (paths under vllm/):
- fused projections: q/k/v live in `qkv_proj`, gate/up in `gate_up_proj`, as the
  model's `packed_modules_mapping` says (model_executor/models/qwen3.py:284-287;
  its loader maps the same names, models/qwen2.py:325-333). A part's rows are the
  layer's own shard: QKVParallelLinear `_get_shard_offset_mapping` /
  `_get_shard_size_mapping` (layers/linear.py:1088-1103), MergedColumnParallelLinear
  `sum(output_sizes[:i]) // tp_size`, `output_sizes[i] // tp_size`
  (layers/linear.py:821-826), along the output dimension (0). A part may span
  several output sizes: Qwen3.5's `in_proj_qkvz` has four (q, k, v, z) for two
  learner tensors, `in_proj_qkv` loading as shards (0, 1, 2) and `in_proj_z` as 3
  (models/qwen3_5.py:228-229); the parts then lie back to back in packed order, so
  each is cut by the rows the learner's tensor has;
- padded vocabularies: a VocabParallelEmbedding's rows past `org_vocab_size` are
  padding (layers/vocab_parallel_embedding.py:284-305);
- on CPU, a linear layer's weight is repacked for oneDNN after loading and the
  parameter is replaced by an empty one (layers/linear.py:206-216 ->
  layers/utils.py `dispatch_cpu_unquantized_gemm(layer, remove_weight=True)`).
  So a layer with a quant method is read as vLLM loaded it, just before its
  `process_weights_after_loading` (called by the layerwise reload after it has
  run the buffered weight loaders: model_loader/reload/layerwise.py
  `_layerwise_process`); every other parameter is read after the update.
MoE experts fused as Transformers 5 fuses them are read as vLLM loads them whole
(FUSED_EXPERTS). A tensor with no counterpart found this way (per-expert names,
expert-parallel layers, renamed prefixes,
tensor-parallel shards) gets None: unconfirmed, never guessed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from core.digest import tensor_checksum

if TYPE_CHECKING:
    import torch

PROCESS = "process_weights_after_loading"
Location = tuple[str, int]
"""(vLLM parameter name, index of the piece of it a learner tensor is)."""


class LoadedChecksums:
    """Checksums of `tensors` ((learner name, dtype, shape) in snapshot order) as
    `model` holds them: `capturing()` around vLLM's load and processing, then
    `result()`. `dtype` is the one the engine holds the tensor in."""

    def __init__(self, model: Any, tensors: list[tuple[str, str, tuple[int, ...]]]):
        self.model = model
        self.modules: dict[str, Any] = dict(model.named_modules())
        self.tensors = tensors
        self.locations = {name: locate(model, self.modules, name) for name, _, _ in tensors}
        self.dtypes = {loc[0]: dtype for (_, dtype, _), loc in self._located() if loc}
        self.part_rows: dict[str, dict[int, int]] = {}
        """Per fused parameter, the rows of each learner tensor packed into it."""
        for (_, _, shape), location in self._located():
            if location is not None and shape:
                self.part_rows.setdefault(location[0], {})[location[1]] = shape[0]
        self.captured: dict[str, list[int | None]] = {}
        self.seconds = 0.0

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """Checksum each layer's parameters right before vLLM processes them."""
        names = {id(module): name for name, module in self.modules.items()}
        wrapped: list[tuple[Any, dict[str, Any]]] = []
        for module in self.modules.values():
            method = getattr(module, "quant_method", None)
            if hasattr(method, PROCESS) and all(method is not m for m, _ in wrapped):
                own = {k: v for k, v in vars(method).items() if k == PROCESS}
                setattr(method, PROCESS, self._before(getattr(method, PROCESS), names))
                wrapped.append((method, own))
        try:
            yield
        finally:
            for method, own in wrapped:
                delattr(method, PROCESS)
                for key, value in own.items():
                    setattr(method, key, value)

    def result(self) -> list[int | None]:
        """Per tensor, in order: its checksum as vLLM holds it, or None."""
        started = time.perf_counter()
        params = dict(self.model.named_parameters(remove_duplicate=False))
        out: list[int | None] = []
        for _, location in self._located():
            if location is None:
                out.append(None)
                continue
            param_name, piece = location
            if param_name not in self.captured and param_name in params:
                module = self.modules[param_name.rpartition(".")[0]]
                self.captured[param_name] = self._checksums(module, param_name, params[param_name])
            pieces = self.captured.get(param_name, [])
            out.append(pieces[piece] if piece < len(pieces) else None)
        self.seconds += time.perf_counter() - started
        return out

    def _located(self) -> Iterator[tuple[tuple[str, str, tuple[int, ...]], Location | None]]:
        for name, dtype, shape in self.tensors:
            yield (name, dtype, shape), self.locations[name]

    def _before(self, process: Any, names: dict[int, str]) -> Any:
        def checksum_then_process(layer: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            prefix = names.get(id(layer))
            if prefix is not None:
                for param_name, param in layer.named_parameters(recurse=False):
                    full = f"{prefix}.{param_name}" if prefix else param_name
                    if full in self.dtypes:
                        self.captured[full] = self._checksums(layer, full, param)
            self.seconds += time.perf_counter() - started
            return process(layer, *args, **kwargs)

        return checksum_then_process

    def _checksums(self, module: Any, param_name: str, param: Any) -> list[int | None]:
        dtype = self.dtypes.get(param_name)
        parts = self.part_rows.get(param_name, {})
        every_part = sorted(parts) == list(range(len(parts)))
        rows = [parts[i] for i in range(len(parts))] if every_part else []
        return [_checksum(p, dtype) for p in pieces(module, param.data, rows)]


FUSED_EXPERTS = {"gate_up_proj": "w13_weight", "down_proj": "w2_weight"}
"""Transformers 5's fused expert tensors ([experts, 2 x intermediate, hidden] with
the gate rows first, [experts, hidden, intermediate]) and the vLLM MoE layer's
parameters that load them whole, in the same layout (fused_moe/routed_experts.py
~1030-1050: a fused 3-D tensor's `chunk(2, dim=1)` gives w1 then w3 of w13); read
just before `process_weights_after_loading`, as linear layers are, because the CPU
kernel repacks them then."""


def locate(model: Any, modules: dict[str, Any], name: str) -> Location | None:
    """Where the learner tensor `name` lives among `model`'s parameters."""
    module_name, _, param_name = name.rpartition(".")
    module = modules.get(module_name)
    if module is not None and isinstance(getattr(module, param_name, None), _tensor_type()):
        return name, 0
    fused = FUSED_EXPERTS.get(param_name)
    if fused is not None:
        # vLLM's MoE runner sits at the model's `experts` name and holds the
        # experts' weights in its `routed_experts` (fused_moe/runner/moe_runner.py:272)
        for owner in (module_name, f"{module_name}.routed_experts"):
            experts = modules.get(owner)
            if _holds_every_expert(experts) and hasattr(experts, fused):
                return f"{owner}.{fused}", 0
    for packed, parts in getattr(model, "packed_modules_mapping", {}).items():
        for index, part in enumerate(parts):
            if module_name.endswith("." + part):
                fused = module_name[: -len(part)] + packed
                if fused in modules:
                    return f"{fused}.{param_name}", index
    return None


def _holds_every_expert(module: Any) -> bool:
    """A MoE layer holding all its experts (no expert parallelism)."""
    total = getattr(module, "global_num_experts", None)
    return total is not None and getattr(module, "local_num_experts", total) == total


def pieces(module: Any, data: torch.Tensor, rows: list[int]) -> list[torch.Tensor | None]:
    """The learner tensors a parameter of `module` holds, in its packed order
    (one piece for an unfused one); None for a shard of a tensor-parallel layer.
    `rows`: the rows of each learner tensor packed into it, in order, where known:
    they cut a merged layer whose parts span several of its output sizes."""
    from vllm.model_executor.layers.linear import MergedColumnParallelLinear, QKVParallelLinear
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    if getattr(module, "tp_size", 1) > 1 or data.numel() == 0:
        return [None]
    if isinstance(module, QKVParallelLinear):
        spans = [
            (module._get_shard_offset_mapping(s), module._get_shard_size_mapping(s)) for s in "qkv"
        ]
        return [data.narrow(0, offset, size) for offset, size in spans]
    if isinstance(module, MergedColumnParallelLinear):
        if len(rows) != len(module.output_sizes):
            return _back_to_back(data, rows)
        starts = [sum(module.output_sizes[:i]) for i in range(len(module.output_sizes))]
        return [data.narrow(0, s, n) for s, n in zip(starts, module.output_sizes, strict=True)]
    if isinstance(module, VocabParallelEmbedding) and data.dim() == 2:
        return [data.narrow(0, 0, module.org_vocab_size)]
    return [data]


def _back_to_back(data: torch.Tensor, rows: list[int]) -> list[torch.Tensor | None]:
    """`data` cut into consecutive blocks of `rows` rows; unknown (None) unless the
    blocks cover it exactly."""
    if not rows or sum(rows) != data.shape[0]:
        return [None] * max(len(rows), 1)
    starts = [sum(rows[:i]) for i in range(len(rows))]
    return [data.narrow(0, start, n) for start, n in zip(starts, rows, strict=True)]


def _checksum(piece: torch.Tensor | None, dtype: str | None) -> int | None:
    """The piece's checksum in the snapshot's dtype; None when it cannot be read
    exactly in it (a narrower engine dtype than the learner's)."""
    import torch

    if piece is None:
        return None
    if dtype is not None and str(piece.dtype).removeprefix("torch.") != dtype:
        target = getattr(torch, dtype)
        if piece.element_size() < target.itemsize:
            return None
        piece = piece.to(target)
    return tensor_checksum(piece)


def _tensor_type() -> type:
    import torch

    return torch.Tensor
