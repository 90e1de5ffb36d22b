"""FP8 training through DeepSpeed on CPU tracks fp32, within tolerances a broken float8
path would miss.

The same batches, from the same weights, on a 1-rank learner in fp32 and in fp8
(torchao float8 linears). The batches are built on the fp32 learner's own logprobs,
so ratios sit near 1 and the gradient flows through the unclipped branch (a batch
far off-policy sits in the clipped branch, where a loss says little about the float8
path). Checked on the first step, from identical weights: the fp8 forward's logprobs
against fp32's (the learner's `mismatch_abs_logprob` against fp32 behavior
logprobs), the loss, and the direction of the update in the float8 layers. (Later
steps start from weights that already differ: Adam's first steps are sign-like and
e5m2 gradients flip the sign of small ones, so the two runs drift apart by design.)

The tolerances' power is shown in the same module: the tiny policy's forward with
the blocks' float8 casts in e5m2 instead of e4m3 (a recipe wired wrongly) lands
beyond LOGPROB_TOLERANCE. Measured here: fp8 logprob gap 0.085-0.11 nats/token
(e5m2 forward 0.43), loss gap 0.006, first-update cosine in the float8 layers 0.64
(a float8 path that drops its gradients gives 0).
"""

from __future__ import annotations

import copy
import random

import pytest
import torch

from core.shm import read_snapshot
from orchestrator.learners import LearnerGroup
from tests.integration.conftest import small_run_config
from tests.integration.test_learner_knobs import _on_policy_batch

LOGPROB_TOLERANCE = 0.2
"""Max mean |logp_fp8 - logp_fp32| (nats/token) before any update (measured 0.085-0.11)."""
LOSS_SIGMAS = 3.0
"""Max |loss_fp8 - loss_fp32| at the first step, in standard deviations of what
float8's logprob noise alone makes of it (`_loss_noise`). Measured 0.006 on one
build of the tiny policy, 0.0157 on another (noise 0.017, bound 0.052): a fixed
0.015 failed on the second. A sign wired wrongly moves the loss by 2 |loss| (~0.1
here), twice the bound."""
BF16_LOGPROB_TOLERANCE = 0.3
"""The same under fp8_bf16, whose bf16 norms, embeddings and head add their own error
(measured 0.16)."""
BF16_LOSS_TOLERANCE = 0.05
"""The first-step loss gap under fp8_bf16 (measured 0.027)."""
UPDATE_COSINE = 0.3
"""Min cosine between fp8's and fp32's first weight update in the float8 layers.
Adam's first step is about lr * sign(gradient), so this is about twice the share
of elements whose gradient sign both agree on, minus one; float8's noise flips the
small ones. Measured above 0.5 on the tiny policy as built on AMD EPYC machines,
0.456 as built on an Intel Xeon (the same with torchao's emulated matmuls and
with torch's own CPU float8 product). A backward of the wrong sign gives about
-0.46, one that returns noise about 0."""
REWARDS = [[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 1.0, 0.2]]


@pytest.fixture(scope="module")
def fp32_run(ray_cluster, tiny_policy, tmp_path_factory, event_loop_runner):
    """The batch (on fp32's own logprobs), fp32's metrics and its first update."""
    run = event_loop_runner
    tmp = tmp_path_factory.mktemp("fp32")
    group = run(LearnerGroup.start(small_run_config(tmp), tiny_policy))
    try:
        batch = _on_policy_batch(run, group, REWARDS)
        metrics, update = _train(run, group, batch, tmp)
    finally:
        group.kill()
    return batch, metrics, update


def _train(run, group, batch, tmp):
    before = _weights(run, group, tmp, 0)
    metrics = run(group.train_step(batch))
    after = _weights(run, group, tmp, 1)
    return metrics, {k: after[k] - before[k] for k in before}


def _weights(run, group, tmp, version):
    snapshot = run(group.export_weights(tmp / "w", version))
    return {name: tensor.clone() for name, tensor in read_snapshot(snapshot)}


def test_fp8_training_tracks_fp32(fp32_run, tiny_policy, tmp_path, event_loop_runner):
    run = event_loop_runner
    batch, reference, reference_update = fp32_run
    cfg = small_run_config(tmp_path)
    cfg.learner.precision = "fp8"
    group = run(LearnerGroup.start(cfg, tiny_policy))
    try:
        plan = run(group.ranks[0].fp8_plan.remote())
        metrics, update = _train(run, group, batch, tmp_path)
    finally:
        group.kill()
    assert len(plan["converted"]) == 28  # 4 layers x (4 attention + 3 MLP projections)
    assert all("lm_head" not in name and "embed" not in name for name in plan["converted"])
    assert any("lm_head" in kept for kept in plan["kept"])
    assert plan["emulated"]  # a CPU learner: float8 matmuls emulated (learner/fp8.py)

    key = "learner/mismatch_abs_logprob"
    print(f"logprob gap to fp32: fp8 {metrics[key]:.4f}, fp32 {reference[key]:.2e}")
    assert reference[key] < 1e-4  # the batch really is fp32's own logprobs
    assert 1e-3 < metrics[key] < LOGPROB_TOLERANCE  # float8 ran, and ran right
    loss, reference_loss = metrics["learner/loss"], reference["learner/loss"]
    noise = _loss_noise(batch, metrics[key])
    print(f"loss: fp8 {loss:.5f} fp32 {reference_loss:.5f}, float8 noise {noise:.4f}")
    assert abs(loss - reference_loss) < LOSS_SIGMAS * noise
    assert metrics["learner/clip_frac"] < 0.25  # ratios near 1: mostly unclipped

    converted = [f"{name}.weight" for name in plan["converted"]]
    ours = torch.cat([update[k].flatten() for k in converted])
    theirs = torch.cat([reference_update[k].flatten() for k in converted])
    cosine = float(torch.nn.functional.cosine_similarity(ours, theirs, dim=0))
    print(f"first update in the float8 layers: cosine to fp32 {cosine:.3f}")
    assert cosine > UPDATE_COSINE


def _loss_noise(batch, gap: float) -> float:
    """The standard deviation of the first-step loss difference that a forward with
    per-token logprob error d_t (mean |d_t| = `gap`) makes, the ratio e^d_t standing
    where fp32 has 1: the loss is -mean_t(A_t r_t), so the difference is mean_t(A_t
    (e^d_t - 1)) ~ rms(A) * rms(d) / sqrt(tokens) for errors that do not follow the
    advantages (rms(d) ~ 1.25 mean |d| for normal errors)."""
    from learner.algos.base import group_normalized

    advantages = [
        a
        for g in batch.groups
        for a, t in zip(group_normalized(g.rewards, True), g.trajectories, strict=True)
        for _ in range(t.num_generated)
    ]
    rms = (sum(a * a for a in advantages) / len(advantages)) ** 0.5
    return rms * 1.25 * gap / len(advantages) ** 0.5


def _logprob_gap(model, reference, ids) -> float:
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1].float()
    logprobs = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    return float((logprobs - reference).abs().mean())


def test_the_logprob_tolerance_catches_a_miswired_float8_recipe(tiny_policy):
    from torchao.float8 import convert_to_float8_training
    from torchao.float8.config import CastConfig, Float8LinearConfig
    from transformers import AutoModelForCausalLM

    from learner.fp8 import convert_to_fp8, plan_fp8

    base = AutoModelForCausalLM.from_pretrained(tiny_policy, dtype=torch.float32).eval()
    rng = random.Random(0)
    ids = torch.tensor([[rng.randrange(5, 300) for _ in range(40)] for _ in range(8)])
    with torch.no_grad():
        logits = base(input_ids=ids).logits[:, :-1].float()
    reference = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]

    right = copy.deepcopy(base)
    convert_to_fp8(right, emulate=True)
    chosen = set(plan_fp8(base).converted)
    e5m2 = CastConfig(target_dtype=torch.float8_e5m2)
    wrong = copy.deepcopy(base)
    convert_to_float8_training(
        wrong,
        module_filter_fn=lambda _, fqn: fqn in chosen,
        config=Float8LinearConfig(cast_config_input=e5m2, cast_config_weight=e5m2, emulate=True),
    )
    right_gap, wrong_gap = _logprob_gap(right, reference, ids), _logprob_gap(wrong, reference, ids)
    print(f"logprob gap to fp32: e4m3 forward {right_gap:.3f}, e5m2 forward {wrong_gap:.3f}")
    assert right_gap < LOGPROB_TOLERANCE < wrong_gap


def test_fp8_bf16_keeps_the_rest_in_bf16_and_tracks_fp32(
    fp32_run, tiny_policy, tmp_path, event_loop_runner
):
    """learner.precision=fp8_bf16: the same float8 layers, every other tensor in bf16
    (what the learner exports shows it), and the first step still near fp32's."""
    run = event_loop_runner
    batch, reference, _ = fp32_run
    cfg = small_run_config(tmp_path)
    cfg.learner.precision = "fp8_bf16"
    group = run(LearnerGroup.start(cfg, tiny_policy))
    try:
        plan = run(group.ranks[0].fp8_plan.remote())
        metrics = run(group.train_step(batch))
        exported = run(group.export_weights(tmp_path / "w", 1))
    finally:
        group.kill()
    assert len(plan["converted"]) == 28
    assert {entry.dtype for entry in exported.entries} == {"bfloat16"}
    key = "learner/mismatch_abs_logprob"
    print(f"logprob gap to fp32: fp8_bf16 {metrics[key]:.4f}")
    assert 1e-3 < metrics[key] < BF16_LOGPROB_TOLERANCE
    assert abs(metrics["learner/loss"] - reference["learner/loss"]) < BF16_LOSS_TOLERANCE
