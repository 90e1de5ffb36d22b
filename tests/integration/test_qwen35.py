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
from tests.integration.test_learning import TRAINING as DIRECT_ANSWER_TRAINING

SHARPEN = 15.0
"""Embedding scale (tied to the LM head) that makes the random model's next-token
distributions peaked, so a logprob gap means something (at init they are near uniform)."""
MARGIN = 0.25
"""Held-out accuracy the trained tiny Qwen3.5-MoE must gain (see the launch test)."""
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
    never: the acceptance the engine reports follows the MTP weights it loaded. With
    sampling, the logprobs the engine reports for the drawn tokens (behaviour
    logprobs) are the target model's, drafts accepted or not. (That sampling with
    drafts draws from the target's distribution was checked by hand: 300 draws of
    4 tokens from a trained tiny Qwen3.5-MoE with and without MTP, first-token total
    variation 0.047, within sampling noise.)"""
    for name in ("plain", "repeat"):
        _build(tokenizer, tmp_path / name, experts=0, sharpen=1.0)
    _drafting_the_last_token_again(tmp_path / "repeat")
    prompt = tokenizer.encode(PROMPT)
    mtp = SpeculativeConfig(method="mtp", num_speculative_tokens=1)

    sampled: list[tuple[list[float], list[float]]] = []

    async def greedy(path, speculative) -> tuple[list[int], tuple[int, int]]:
        engine = _engine(str(path), speculative)
        await engine.start()
        try:
            generation = await engine.generate(
                prompt, SamplingSpec(max_tokens=16, temperature=0.0), 120.0
            )
            stats = engine.snapshot_stats()
            # sampled, with drafts: the logprobs reported are the target's for the
            # tokens drawn (the prompt pass of the same engine, which drafts nothing)
            draw = await engine.generate(prompt, SamplingSpec(max_tokens=16), 120.0)
            target = await engine.prompt_logprobs(prompt + draw.token_ids)
            sampled.append((draw.logprobs, target[len(prompt) - 1 :]))
            return generation.token_ids, (stats.spec_drafted, stats.spec_accepted)
        finally:
            engine.shutdown()

    drafted_random, (drafted, accepted) = event_loop_runner(greedy(tmp_path / "plain", mtp))
    repeated, (drafted_r, accepted_r) = event_loop_runner(greedy(tmp_path / "repeat", mtp))
    for reported, target in sampled:
        assert len(reported) == len(target) == 16
        gap = max(abs(a - b) for a, b in zip(reported, target, strict=True))
        assert gap < 0.05, (gap, reported, target)  # bf16, batch shapes differ
    # lossless: all drafts accepted or nearly all rejected, the same greedy text
    assert repeated == drafted_random
    assert len(repeated) == 16 and len(set(repeated)) == 1  # the premise: it repeats a token
    assert drafted > 0 and accepted < drafted
    assert drafted_r > 0 and accepted_r == drafted_r


def test_launch_trains_a_tiny_qwen3_5_moe_policy_and_its_held_out_reward_rises(tmp_path):
    """`python -m rollout.launch +experiment=agentic_grpo model=tiny_qwen35_moe` (the
    test-sized warm-up) on DirectAnswer (tests/integration/direct_answer.py: reward 1
    for answering a calculator question directly): vLLM serves the hybrid MoE in bf16,
    the learner trains it in fp32, every version reaches the engine, and the run's own
    evaluation (32 held-out tasks x 8 samples at temperature 1, seeds from 1e9, each on
    the version it names) scores v0 and v10. Measured here at lr 5e-4: 0.46 -> 0.89,
    0.47 -> 0.92 in ~80 s, the entropy steady; at 1e-3 one run in five
    gained only 0.07 (0.48 -> 0.56, in CI) and another collapsed into repeated tokens.
    Were training to do nothing, the two means (256 Bernoulli(~0.45) samples each)
    would differ by ~0.044 in standard deviation: MARGIN is ~5.7 of them. Sync mode
    for the reason tests/integration/test_learning.py gives. fp32 engines are refused
    before any actor starts."""
    root = Path(__file__).resolve().parents[2]
    run = [
        *DIRECT_ANSWER_TRAINING,  # test_learning's run: DirectAnswer, 10 sync steps, lr 5e-4
        "model=tiny_qwen35_moe",
        "eval.every=10",
        "eval.tasks=32",
        "eval.samples=8",
        "eval.temperature=1.0",
    ]

    def launch(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rollout.launch", *run, *extra, f"hydra.run.dir={run_dir}"],
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
    steps = [r for r in rows if "learner/samples" in r]
    assert [round(r["trainer/version"]) for r in steps] == list(range(1, 11))
    mismatch = [r["learner/mismatch_abs_logprob"] for r in steps]
    assert max(mismatch) < 0.1, mismatch  # bf16 engine against the fp32 learner
    assert all(r["sync/lock_broken"] == 0 for r in steps)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    print(f"tiny_qwen35_moe held-out {summary['eval_first']:.3f} -> {summary['eval_last']:.3f}")
    assert summary["eval_last"] - summary["eval_first"] > MARGIN, summary
    assert (tmp_path / "run" / "reward_curve.png").stat().st_size > 0


def _moe_pair(tokenizer, directory: Path, architecture: str) -> tuple[torch.nn.Module, ...]:
    """Two MoE policies with different weights, the first saved at `directory`."""
    if architecture == "qwen3_5":
        other = build_model(tokenizer, _arch(8), seed=1)
        with torch.no_grad():
            other.model.embed_tokens.weight.mul_(SHARPEN)
        return _build(tokenizer, directory, 8), other.eval()
    from tests.tiny_models import tiny_moe

    policy, other = (tiny_moe(len(tokenizer)) for _ in range(2))
    with torch.no_grad():
        torch.manual_seed(1)
        for weight in other.parameters():
            weight.add_(0.1 * torch.randn_like(weight))
    for model in (policy, other):
        model.config.eos_token_id = tokenizer.eos_token_id
    policy.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return policy.eval(), other.eval()


@pytest.mark.parametrize(
    ("architecture", "dtype"),
    [("qwen3", "float32"), ("qwen3_5", "bfloat16")],
    ids=["qwen3_moe_fp32", "qwen3_5_moe_bf16"],
)
def test_a_moe_weight_update_serves_the_sent_weights_and_sending_back_restores_them(
    architecture, dtype, tokenizer, tmp_path, event_loop_runner
):
    """vLLM's CPU MoE kernel reads prepacked expert weights; an update must end in that
    layout too (rollout.vllm_plugin.repack_cpu_moe_experts_on_weight_update). Without
    it, sending a Qwen3.5-MoE its own weights back moved its logprobs by ~2.4."""
    from core.shm import remove_snapshot, write_snapshot
    from orchestrator.fleet import confirm

    policy, other = _moe_pair(tokenizer, tmp_path / "moe", architecture)
    ids = tokenizer.encode(PROMPT + "<answer>7</answer>")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    engine = Engine(str(tmp_path / "moe"), RolloutConfig(max_model_len=256), dtype, 0)

    unconfirmed: list[list[str]] = []

    async def send(model: torch.nn.Module, version: int) -> list[float]:
        state = model.state_dict().items()
        snapshot = write_snapshot(tmp_path / f"v{version}.bin", state, version, dtype)
        try:
            sync = await engine.update_weights(snapshot, "turn")
        finally:
            remove_snapshot(snapshot)
        confirm("worker", sync, snapshot)  # what the engine holds is what was sent
        held = zip(snapshot.entries, sync.checksums, strict=True)
        unconfirmed.append([e.name for e, checksum in held if checksum is None])
        return await engine.prompt_logprobs(ids)

    async def round_trip() -> tuple[list[float], list[float], list[float]]:
        await engine.start()
        try:
            before = await engine.prompt_logprobs(ids)
            return before, await send(other, 1), await send(policy, 2)
        finally:
            engine.shutdown()

    before, as_other, back = (torch.tensor(x) for x in event_loop_runner(round_trip()))
    expected = _hf_logprobs(other, ids, torch.float32)
    floor = (_hf_logprobs(other, ids, getattr(torch, dtype)) - expected).abs().mean().item()
    gap = (as_other - expected).abs().mean().item()
    print(f"{architecture} MoE update: |served - sent| {gap:.4f} (dtype floor {floor:.4f})")
    assert (back - before).abs().max().item() < 1e-5
    assert unconfirmed == [[], []], unconfirmed  # bf16 and the fused experts confirmed too
    assert gap <= 2 * floor + 1e-3, (gap, floor)
    assert (as_other - before).abs().mean().item() > 10 * gap  # the update took effect
