"""What asyncrl asks of vLLM when it starts an engine: the engine arguments from
`rollout.*` (RolloutConfig), the speculative-decoding config, and refusing, in
one line, what vLLM can only do on a GPU. Pure functions; vLLM is not imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import RolloutConfig


class EngineUnsupported(RuntimeError):
    """A requested engine feature cannot run on this machine; the message says why."""


def speculative_config(spec: Any) -> dict[str, Any] | None:
    """vLLM's speculative_config for asyncrl's SpeculativeConfig (None when off)."""
    if spec.method == "none":
        return None
    config: dict[str, Any] = {
        "method": spec.method,
        "num_speculative_tokens": spec.num_speculative_tokens,
    }
    if spec.method == "ngram":
        config |= {
            "prompt_lookup_min": spec.prompt_lookup_min,
            "prompt_lookup_max": spec.prompt_lookup_max,
        }
    elif spec.method == "draft_model":
        config["model"] = spec.draft_model
    return config


def check_supported(return_routed_experts: bool, quantization: str | None = None) -> None:
    """Refuse, in one line, what vLLM can only do on a GPU."""
    import torch

    if torch.cuda.is_available():
        return
    if return_routed_experts:
        raise EngineUnsupported(
            "rollout.return_routed_experts needs vLLM's Model Runner V2, which needs Triton "
            "on a GPU; this machine has none (routing replay then uses the learner's routing)"
        )
    if quantization == "fp8":
        raise EngineUnsupported("FP8 rollout needs a GPU: vLLM's CPU build has no fp8 kernels")


def linear_attention(model_path: str) -> bool:
    """Whether the checkpoint has linear-attention (Gated DeltaNet) layers: Qwen3.5,
    Qwen3-Next. vLLM keeps recurrent state for them beside the KV cache."""
    path = Path(model_path) / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    text = config.get("text_config") or config
    return "linear_attention" in (text.get("layer_types") or [])


def check_linear_attention_dtype(model_path: str, dtype: str, gpus_per_worker: int) -> None:
    """Refuse, in one line, a CPU engine of a linear-attention model in another dtype
    than bf16: vLLM's CPU Gated DeltaNet kernel runs only in bf16 (vllm/model_executor/
    layers/mamba/ops/cpu/gdn_attention.py:158 asserts it at the first forward)."""
    if gpus_per_worker == 0 and dtype != "bfloat16" and linear_attention(model_path):
        raise EngineUnsupported(
            f"{model_path} has Gated DeltaNet (linear-attention) layers, which vLLM runs on "
            f"CPU in bf16 only; model.dtype={dtype}: set model.dtype=bfloat16"
        )


def check_linear_attention_speculation(model_path: str, method: str, gpus_per_worker: int) -> None:
    """Refuse, in one line, ngram speculation on a CPU engine of a linear-attention
    model: vLLM 0.32's CPU Gated DeltaNet kernel fails at the first drafted step
    (mamba/ops/cpu/gdn_attention.py:556 `_spec_forward`, "The size of tensor a (4)
    must match the size of tensor b (3)", with 1 and with 4 drafts per step) and
    the engine dies; MTP, which drafts a fixed number of tokens, runs."""
    if gpus_per_worker == 0 and method == "ngram" and linear_attention(model_path):
        raise EngineUnsupported(
            f"{model_path} has Gated DeltaNet (linear-attention) layers, and vLLM's CPU "
            "kernel for them fails on ngram drafts; set rollout.speculative.method=mtp "
            "(the model's own MTP layers) or none"
        )


def vllm_args(
    model_path: str, cfg: RolloutConfig, dtype: str, seed: int, core: int | None = None
) -> dict[str, Any]:
    """vLLM's AsyncEngineArgs for an engine of `model_path` as `cfg` asks for it
    (rollout.engine_args last: they override the rest). `core`: the one CPU core the
    engine is bound to, if any (see `one_process`)."""
    args: dict[str, Any] = dict(
        model=model_path,
        dtype=dtype,
        max_model_len=cfg.max_model_len,
        max_num_seqs=cfg.max_num_seqs,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        enforce_eager=cfg.enforce_eager,
        seed=seed,
        # Behavior logprobs must be those of the distribution actually sampled
        # (after temperature), which is what the learner recomputes.
        logprobs_mode="processed_logprobs",
        enable_prefix_caching=True,
        weight_transfer_config={"backend": "asyncrl_shm"},
        # Lets the engine ask its worker processes what they run (see
        # `expand_kernel_in_use`); engine_args may replace it.
        worker_extension_cls="rollout.vllm_plugin.WorkerInspection",
        disable_log_stats=True,
    )
    if speculative := speculative_config(cfg.speculative):
        args["speculative_config"] = speculative
        args["per_request_spec_decode_metrics"] = "summary"
        if cfg.gpus_per_worker == 0 and linear_attention(model_path):
            # With prefix caching, vLLM keeps linear-attention state in its 'align' mode
            # (vllm/model_executor/models/config.py:686-687), and speculative decoding
            # then copies it with a Triton kernel (vllm/v1/worker/mamba_utils.py:1226),
            # which has no CPU backend: the first step fails.
            args["enable_prefix_caching"] = False
    if cfg.return_routed_experts:
        args["enable_return_routed_experts"] = True
    if cfg.sleep_level > 0 and cfg.gpus_per_worker > 0:  # CPU platforms refuse the flag
        args["enable_sleep_mode"] = True
    if cfg.gpus_per_worker > 1:  # the worker's GPUs (one placement bundle) as one TP group
        # Inside a placement group vLLM would pick its Ray executor and ask Ray for
        # GPUs the worker already holds (vllm/config/parallel.py:1066-1075).
        args |= {"tensor_parallel_size": cfg.gpus_per_worker, "distributed_executor_backend": "mp"}
    if core is not None and cfg.gpus_per_worker == 0:
        args["distributed_executor_backend"] = UNI
    return args | dict(cfg.engine_args)


def eager_helpers(cfg: RolloutConfig, args: dict[str, Any]) -> bool:
    """Whether vLLM's own torch.compile'd helpers run eagerly in the processes of an
    engine with `cfg` and final `args` (rollout.vllm_plugin.run_compiled_helpers_eagerly): a CPU
    engine that runs its model eagerly (enforce_eager, the default). Compiling them
    costs such an engine's first request ~2 s; eagerly its sampling runs as fast."""
    return cfg.gpus_per_worker == 0 and bool(args.get("enforce_eager"))


UNI = "uni"
"""vLLM's executor that runs the model in the engine-core process itself (its default
for one GPU)."""


def one_process(args: dict[str, Any]) -> bool:
    """Whether an engine with these args runs its model inside the engine-core process
    on CPU. A CPU worker bound to one core does: vLLM's CPU platform otherwise turns
    `uni` into a separate worker process (vllm/platforms/cpu.py:333-341, so that
    it can set the OpenMP environment of a multi-core worker), which costs a third
    spawned interpreter that imports vLLM again at start-up (~6 s of the engine's
    ~19 s on this machine) and a shared-memory queue between two processes that
    busy-wait on each other at every step. One core, one torch thread (vLLM's
    engine core sets it): there is no OpenMP environment to set."""
    return (
        args.get("distributed_executor_backend") == UNI and args.get("tensor_parallel_size", 1) == 1
    )
