"""Tiny Qwen3.5 policies (Gated DeltaNet layers with gated full attention, dense and
MoE, one MTP layer; bootstrap.build) on real vLLM engines on this CPU.

vLLM runs their linear attention on CPU in bf16 only, so the engine's logprobs are
bf16 logprobs: the bound stated and held here is that the engine is no further from
the model's fp32 logprobs (Transformers, the learner's forward) than twice the gap
bf16 rounding alone opens in the same Transformers model, while a model with other
weights is far outside it. MTP speculation drafts with the checkpoint's own MTP
layer, is lossless (the greedy text is the target's), and reports its acceptance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bootstrap.build import add_mtp_weights, build_model
from core.config import RolloutConfig, SpeculativeConfig, TinyModelConfig
from rollout.engine import Engine, SamplingSpec
from tests.integration.conftest import TEST_OVERRIDES

SHARPEN = 15.0
"""Embedding scale (tied to the LM head) that makes the random model's next-token
distributions peaked, so a logprob gap means something (at init they are near uniform)."""
PROMPT = "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n"


def _arch(experts: int) -> TinyModelConfig:
    return TinyModelConfig(
        architecture="qwen3_5",
        num_experts=experts,
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_heads=2,
        num_kv_heads=1,
    )


def _build(tokenizer, directory, experts: int, seed: int = 0, sharpen: float = SHARPEN):
    model = build_model(tokenizer, _arch(experts), seed)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(sharpen)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    add_mtp_weights(model, directory)
    return model.eval()


def _drafting_the_last_token_again(directory) -> None:
    """Rewrite the MTP layer so that its draft for position t+2 is the target's own
    prediction at t: fc keeps the hidden state ([0 | I] over [embedding; hidden]), the
    layer adds nothing (its output projections zeroed), its norm is the model's.
    Every draft is then accepted where the target repeats its last token."""
    path = directory / "model.safetensors"
    weights = load_file(path)
    hidden = weights["mtp.fc.weight"].shape[0]
    weights["mtp.fc.weight"] = torch.cat([torch.zeros(hidden, hidden), torch.eye(hidden)], 1)
    for name in weights:
        if name.startswith("mtp.layers.") and name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name] = torch.zeros_like(weights[name])
    weights["mtp.norm.weight"] = weights["model.norm.weight"].clone()
    save_file(weights, path, metadata={"format": "pt"})


def _hf_logprobs(model, ids: list[int], dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        logits = model.to(dtype)(torch.tensor([ids])).logits[0, :-1].float()
    model.to(torch.float32)
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


@pytest.fixture(scope="module")
def tokenizer(tiny_policy):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_policy)


def _engine(path: str, speculative: SpeculativeConfig | None = None) -> Engine:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cfg = RolloutConfig(max_model_len=256, max_num_seqs=4)
    if speculative is not None:
        cfg.speculative = speculative
    return Engine(path, cfg, dtype="bfloat16", seed=0)


@pytest.mark.parametrize("experts", [0, 8], ids=["dense", "moe"])
def test_vllm_serves_a_tiny_qwen3_5_with_the_models_logprobs_within_bf16_noise(
    experts, tokenizer, tmp_path, event_loop_runner
):
    model = _build(tokenizer, tmp_path / "policy", experts)
    other = _build(tokenizer, tmp_path / "other", experts, seed=1)
    prompt = tokenizer.encode(PROMPT)
    engine = _engine(str(tmp_path / "policy"))

    async def serve() -> tuple[list[int], list[float]]:
        await engine.start()
        try:
            generation = await engine.generate(prompt, SamplingSpec(max_tokens=24), 120.0)
            ids = prompt + generation.token_ids
            return ids, await engine.prompt_logprobs(ids)
        finally:
            engine.shutdown()

    ids, served = event_loop_runner(serve())
    served = torch.tensor(served)
    fp32 = _hf_logprobs(model, ids, torch.float32)
    bf16_floor = (_hf_logprobs(model, ids, torch.bfloat16) - fp32).abs().mean().item()
    gap = (served - fp32).abs().mean().item()
    unrelated = (served - _hf_logprobs(other, ids, torch.float32)).abs().mean().item()
    print(
        f"qwen3.5 experts={experts}: |vLLM bf16 - HF fp32| mean {gap:.4f}, HF bf16 floor "
        f"{bf16_floor:.4f}, other weights {unrelated:.3f}"
    )
    assert fp32.std() > 0.5  # peaked distributions: the comparison can tell models apart
    assert gap <= 2 * bf16_floor + 0.01, (gap, bf16_floor)
    assert unrelated > 5 * gap, (unrelated, gap)


def test_mtp_speculation_with_the_policys_own_mtp_layer_is_lossless_and_reports_acceptance(
    tokenizer, tmp_path, event_loop_runner
):
    """An unsharpened tiny model greedily repeats one token; an MTP layer that drafts
    the last token again is then always accepted, the checkpoint's random one almost
    never: the acceptance the engine reports follows the MTP weights it loaded."""
    for name in ("plain", "repeat"):
        _build(tokenizer, tmp_path / name, experts=0, sharpen=1.0)
    _drafting_the_last_token_again(tmp_path / "repeat")
    prompt = tokenizer.encode(PROMPT)
    mtp = SpeculativeConfig(method="mtp", num_speculative_tokens=1)

    async def greedy(path, speculative) -> tuple[list[int], tuple[int, int]]:
        engine = _engine(str(path), speculative)
        await engine.start()
        try:
            generation = await engine.generate(
                prompt, SamplingSpec(max_tokens=16, temperature=0.0), 120.0
            )
            stats = engine.snapshot_stats()
            return generation.token_ids, (stats.spec_drafted, stats.spec_accepted)
        finally:
            engine.shutdown()

    drafted_random, (drafted, accepted) = event_loop_runner(greedy(tmp_path / "plain", mtp))
    repeated, (drafted_r, accepted_r) = event_loop_runner(greedy(tmp_path / "repeat", mtp))
    # lossless: all drafts accepted or nearly all rejected, the same greedy text
    assert repeated == drafted_random
    assert len(repeated) == 16 and len(set(repeated)) == 1  # the premise: it repeats a token
    assert drafted > 0 and accepted < drafted
    assert drafted_r > 0 and accepted_r == drafted_r


def test_launch_trains_a_tiny_qwen3_5_policy_and_refuses_fp32_in_one_line(tmp_path):
    """`python -m rollout.launch +experiment=agentic_grpo model=tiny_qwen35` (a
    test-sized warm-up, three steps): the policy is built, vLLM serves it in bf16, the
    learner trains it in fp32 and every version reaches the engine. fp32 engines are
    refused before any actor starts. (The MoE variant's weight updates do not reach
    vLLM intact yet: see the next test.)"""
    root = Path(__file__).resolve().parents[2]
    small = [
        "+experiment=agentic_grpo",
        "model=tiny_qwen35",
        *TEST_OVERRIDES,
        "trainer.total_steps=3",
        "logger.wandb.enabled=false",
        "logger.progress=false",
    ]

    def launch(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rollout.launch", *small, *extra, f"hydra.run.dir={run_dir}"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=900,
        )

    refused = launch(tmp_path / "fp32", "model.dtype=float32")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].endswith("set model.dtype=bfloat16")

    result = launch(tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [round(r["trainer/version"]) for r in rows] == [1, 2, 3]
    assert all(r["learner/samples"] > 0 for r in rows)
    mismatch = [r["learner/mismatch_abs_logprob"] for r in rows]
    assert max(mismatch) < 0.2, mismatch  # bf16 engine against the fp32 learner
    assert all(r.get("sync/pause_s", 0.0) >= 0.0 for r in rows)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="a weight update of a MoE model through vLLM 0.32's CPU weight-transfer path "
    "does not reproduce the weights it was given (re-sending the unchanged weights moves "
    "a Qwen3-MoE's logprobs by ~0.014, a Qwen3.5-MoE's by ~2.4); found, not fixed yet",
)
def test_resending_a_moe_models_own_weights_leaves_its_logprobs_unchanged(
    tokenizer, tmp_path, event_loop_runner
):
    from core.shm import remove_snapshot, write_snapshot
    from tests.tiny_models import tiny_moe

    model = tiny_moe(len(tokenizer))
    model.config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(tmp_path / "moe")
    tokenizer.save_pretrained(tmp_path / "moe")
    ids = tokenizer.encode(PROMPT + "<answer>7</answer>")
    engine = Engine(str(tmp_path / "moe"), RolloutConfig(max_model_len=256), "float32", 0)

    async def resend() -> tuple[list[float], list[float]]:
        await engine.start()
        try:
            before = await engine.prompt_logprobs(ids)
            snapshot = write_snapshot(tmp_path / "same.bin", model.state_dict().items(), 1)
            await engine.update_weights(snapshot, "turn")
            remove_snapshot(snapshot)
            return before, await engine.prompt_logprobs(ids)
        finally:
            engine.shutdown()

    before, after = event_loop_runner(resend())
    assert max(abs(a - b) for a, b in zip(before, after, strict=True)) < 1e-5
