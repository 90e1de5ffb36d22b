"""Learner-side GPU check (issue 15): what a CUDA machine does with asyncrl's learner,
measured in one command that needs no vLLM, no Ray and no network (not a test; not
part of `make test`). It imports only torch, transformers and asyncrl's
learner and core packages (no bench helpers: a bare machine may lack their imports).

    python -m bench.gpu_check [--quick] [--seq-len 2048] [--steps 5] [--json PATH]

Imports torch and transformers, and DeepSpeed and torchao when they are installed
(a part whose library is missing is reported as skipped, saying which). Models are
built from config with random weights; nothing is downloaded.

1. zero: a DeepSpeed ZeRO-2 engine over NCCL (gloo without CUDA) on one device, built
   by the learner's own `learner.setup.build_engine`, world size 1.
2. precision: learner tokens/s (forward, backward, optimizer step on one sequence of
   `--seq-len` tokens) on a Qwen3 of ~0.6B parameters (Qwen3-0.6B's shape) in
   `learner.precision` bf16, fp8_bf16 (float8 GEMMs through torchao, embeddings, LM
   head, norms in bf16: the Qwen3.5 report's recipe) and fp8 (the same GEMMs, the
   rest in fp32), side by side; ratios against bf16.
3. routing replay: a Qwen3-MoE built from config; the routers are perturbed after
   their choices were recorded; without replay some tokens change experts, with
   `learner.routing_replay.RoutingReplay` none does.

`--quick` shrinks every model and sequence so the script runs on a CPU in a minute:
a check of the script itself, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

QWEN3_06B = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
}
QUICK = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 1024,
}
MOE = {"num_experts": 16, "num_experts_per_tok": 4, "moe_intermediate_size": 256}
PRECISIONS = ("bf16", "fp8_bf16", "fp8")
WARMUP_STEPS = 2


def main() -> None:
    args = _parse()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = QUICK if args.quick else QWEN3_06B
    seq_len = 128 if args.quick else args.seq_len
    report: dict[str, Any] = {"machine": _machine(device), "seq_len": seq_len, "shape": shape}
    print(f"gpu_check on {report['machine']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_path, report["parameters"] = _build_dense(shape, Path(tmp) / "qwen3")
        report["precision"] = {
            p: _part(f"learner {p}", lambda p=p: _learner_rate(model_path, p, seq_len, args.steps))
            for p in PRECISIONS
        }
    report["ratios"] = _ratios(report["precision"])
    report["routing_replay"] = _part("routing replay", lambda: _routing_replay(device, args.quick))
    _print(report)
    if args.json:  # plain json: bench.record needs psutil, which a bare machine may lack
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


def _part(name: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`measure()`, or why it could not run (one line, and the traceback's last lines)."""
    try:
        result = measure()
    except ImportError as exc:
        result = {"skipped": f"{exc.name or exc} is not installed"}
    except Exception as exc:  # noqa: BLE001 - a check reports what failed and goes on
        result = {"failed": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    print(f"  {name}: {json.dumps({k: v for k, v in result.items() if k != 'trace'})}", flush=True)
    return result


def _build_dense(shape: dict[str, int], directory: Path) -> tuple[str, int]:
    """A random Qwen3 of `shape` saved to `directory`, and its parameter count."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(**shape, max_position_embeddings=8192, tie_word_embeddings=True)
    model = Qwen3ForCausalLM(config)
    model.save_pretrained(directory)
    return str(directory), sum(p.numel() for p in model.parameters())


def _learner_rate(model_path: str, precision: str, seq_len: int, steps: int) -> dict[str, Any]:
    """Tokens/s of the learner's DeepSpeed engine in `precision` (ZeRO-2, one rank)."""
    from core.config import LearnerConfig
    from learner.setup import RankInfo, build_engine, init_distributed

    if not torch.distributed.is_initialized():
        init_distributed(RankInfo())
    cfg = LearnerConfig(precision=precision, zero_stage=2)
    engine, plan = build_engine(model_path, cfg, world_size=1)
    device = engine.device
    vocab = engine.module.config.vocab_size
    ids = torch.randint(0, vocab, (1, seq_len), device=device, generator=None)
    timings = []
    for _ in range(WARMUP_STEPS + steps):
        started = _synced_time(device)
        logits = engine(input_ids=ids, use_cache=False).logits[:, :-1].float()
        loss = -torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).mean()
        engine.backward(loss)
        engine.step()
        timings.append(_synced_time(device) - started)
    measured = sorted(timings[WARMUP_STEPS:])[len(timings[WARMUP_STEPS:]) // 2]
    result = {
        "tokens_per_s": seq_len / measured,
        "step_s": measured,
        "backend": torch.distributed.get_backend(),
        "zero_stage": engine.zero_optimization_stage(),
        "float8_layers": len(plan.converted) if plan else 0,
        "peak_gib": _peak_gib(device),
    }
    del engine
    _free(device)
    return result


def _routing_replay(device: str, quick: bool) -> dict[str, Any]:
    """Tokens whose experts change when the routers move, without and with replay."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from learner.routing_replay import RoutingReplay

    torch.manual_seed(0)
    shape = {**(QUICK if quick else QWEN3_06B), "num_hidden_layers": 4, "vocab_size": 4096}
    config = Qwen3MoeConfig(**shape, **MOE, decoder_sparse_step=1)
    model = Qwen3MoeForCausalLM(config).to(device, torch.bfloat16).eval()
    replay = RoutingReplay(model)
    ids = torch.randint(0, config.vocab_size, (2, 256), device=device)
    with torch.no_grad():
        before = _routes(model, replay, ids)
        for router in replay.routers:
            router.weight.add_(torch.randn_like(router.weight) * router.weight.std() * 0.3)
        moved = _routes(model, replay, ids)
        indices = torch.stack(before, dim=1)  # [tokens, MoE layers (all of them), k]
        with replay.replaying(indices, torch.ones(indices.shape[0], dtype=torch.bool)):
            replayed = _routes(model, replay, ids)
    return {
        "moe_layers": replay.num_layers,
        "tokens": int(indices.shape[0]),
        "changed_without_replay": _changed(before, moved),
        "changed_with_replay": _changed(before, replayed),
    }


def _routes(model: Any, replay: Any, ids: torch.Tensor) -> list[torch.Tensor]:
    with replay.recording() as recorded:
        model(input_ids=ids)
    return [r.sort(dim=-1).values for r in recorded]


def _changed(a: list[torch.Tensor], b: list[torch.Tensor]) -> int:
    return int(sum((x != y).any(dim=-1).sum() for x, y in zip(a, b, strict=True)))


def _ratios(rates: dict[str, dict[str, Any]]) -> dict[str, float]:
    base = rates.get("bf16", {}).get("tokens_per_s")
    if not base:
        return {}
    return {f"{p}/bf16": r["tokens_per_s"] / base for p, r in rates.items() if "tokens_per_s" in r}


def _synced_time(device: torch.device | str) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _peak_gib(device: torch.device | str) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def _free(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"CPU only (torch {torch.__version__})"


def _print(report: dict[str, Any]) -> None:
    print(
        f"\n{report['machine']}: Qwen3 {report['parameters'] / 1e6:.1f}M parameters, "
        f"sequence {report['seq_len']} tokens"
    )
    for precision, r in report["precision"].items():
        if "tokens_per_s" in r:
            print(
                f"  {precision:<9} {r['tokens_per_s']:>9.0f} tokens/s "
                f"({report['ratios'].get(f'{precision}/bf16', 0):.2f}x bf16), "
                f"{r['float8_layers']} float8 layers, {r['backend']}, ZeRO-{r['zero_stage']}"
            )
        else:
            print(f"  {precision:<9} {r.get('skipped') or r.get('failed')}")
    replay = report["routing_replay"]
    if "tokens" in replay:
        routings = replay["tokens"] * replay["moe_layers"]
        print(
            f"  routing replay: {replay['changed_without_replay']} of {routings} token routings "
            f"({replay['moe_layers']} MoE layers) change experts when the routers move; "
            f"with replay {replay['changed_with_replay']}"
        )


def _parse() -> argparse.Namespace:
    args = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    args.add_argument("--json", default=None, help="also write the results here as JSON")
    args.add_argument("--quick", action="store_true", help="tiny shapes: check the script on CPU")
    args.add_argument("--seq-len", type=int, default=2048, help="tokens per training sequence")
    args.add_argument("--steps", type=int, default=5, help="measured steps per precision")
    return args.parse_args()


if __name__ == "__main__":
    main()
