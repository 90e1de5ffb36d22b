"""Loss knobs through a real DeepSpeed rank (Ray actor, gloo): the entropy bonus moves
the weights on its own, MIS takes masked tokens out of the token-mean denominator
across micro-batches, and shared prompts (learner.share_prefix) train exactly as
unshared ones while forwarding fewer positions.

Batches are built on the learner's own logprobs (behavior = what the learner computes
for the same tokens), so the ratio and the importance weight are 1 except where a
test shifts the behavior logprobs on purpose.
"""

from __future__ import annotations

import random

import pytest
import torch

from core.shm import read_snapshot
from core.types import Batch, Group, Trajectory
from orchestrator.learners import LearnerGroup
from tests.integration.conftest import small_run_config


def _on_policy_batch(
    run, group, rewards: list[list[float]], masked_reward=None, seed: int = 0
) -> Batch:
    """Groups of random sequences whose behavior logprobs are the learner's own; the
    generated tokens of trajectories with reward `masked_reward` get behavior
    logprobs 3 nats above the learner's (importance weight e^-3: outside MIS's band)."""
    rng = random.Random(seed)
    groups = []
    for g, group_rewards in enumerate(rewards):
        trajectories = []
        for i, reward in enumerate(group_rewards):
            prompt = [rng.randrange(5, 300) for _ in range(12)]
            generated = [rng.randrange(5, 300) for _ in range(rng.randrange(6, 12))]
            own = run(group.logprobs(prompt + generated))[len(prompt) - 1 :]
            shift = 3.0 if reward == masked_reward else 0.0
            t = Trajectory(f"{g}/{i}", str(g), "synthetic", g, len(prompt))
            t.append(prompt, generated=False)
            t.append(generated, True, [lp + shift for lp in own], [0] * len(generated))
            t.reward = reward
            trajectories.append(t)
        groups.append(Group(str(g), "synthetic", g, trajectories))
    return Batch(groups, 0)


def _weights(run, group, directory, version) -> dict[str, torch.Tensor]:
    snapshot = run(group.export_weights(directory, version))
    return {name: tensor.clone() for name, tensor in read_snapshot(snapshot)}


def _largest_change(before, after) -> float:
    return max(float((after[k] - before[k]).abs().max()) for k in before)


ZERO_ADVANTAGE = [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]


def test_entropy_bonus_moves_the_weights_when_advantages_are_zero(
    ray_cluster, tiny_policy, tmp_path, event_loop_runner
):
    run = event_loop_runner
    cfg = small_run_config(tmp_path)
    cfg.algo.entropy_coef = 0.05
    group = run(LearnerGroup.start(cfg, tiny_policy))
    try:
        before = _weights(run, group, tmp_path / "w", 0)
        metrics = run(group.train_step(_on_policy_batch(run, group, ZERO_ADVANTAGE)))
        after = _weights(run, group, tmp_path / "w", 1)
    finally:
        group.kill()
    assert metrics["learner/grad_norm"] > 0
    assert _largest_change(before, after) > 1e-5  # one Adam step at lr 2e-4 moves ~2e-4


def test_mis_counts_only_kept_tokens_across_micro_batches(
    ray_cluster, tiny_policy, tmp_path, event_loop_runner
):
    run = event_loop_runner
    cfg = small_run_config(tmp_path)
    cfg.algo.off_policy = "mis"
    cfg.learner.micro_batch_tokens = 60  # ~2 sequences per micro-batch: several of them
    group = run(LearnerGroup.start(cfg, tiny_policy))
    try:
        # Without an entropy bonus, zero advantages leave the weights exactly where they
        # were (the control for the test above).
        before = _weights(run, group, tmp_path / "w", 0)
        run(group.train_step(_on_policy_batch(run, group, ZERO_ADVANTAGE)))
        assert _largest_change(before, _weights(run, group, tmp_path / "w", 1)) == 0.0

        # Reward-0 trajectories are masked whole; the kept ones have advantage +a.
        rewards = [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]]
        batch = _on_policy_batch(run, group, rewards, masked_reward=0.0)
        metrics = run(group.train_step(batch))
    finally:
        group.kill()
    advantages = {}
    for g in batch.groups:
        values = torch.tensor(g.rewards, dtype=torch.float64)
        normalized = (values - values.mean()) / (values.std() + 1e-6)
        advantages |= {
            t.trajectory_id: float(a) for t, a in zip(g.trajectories, normalized, strict=True)
        }
    kept = [t for t in batch.trajectories if t.reward == 1.0]
    kept_tokens = sum(t.num_generated for t in kept)
    all_tokens = sum(t.num_generated for t in batch.trajectories)
    # ratio 1 and importance weight 1 on kept tokens: the loss is -mean_kept(A)
    expected = -sum(advantages[t.trajectory_id] * t.num_generated for t in kept) / kept_tokens
    assert metrics["learner/micro_batches"] >= 3
    assert metrics["learner/is_masked_frac"] == pytest.approx(1 - kept_tokens / all_tokens)
    assert metrics["learner/loss"] == pytest.approx(expected, rel=1e-3)
    # with masked tokens left in the denominator it would be smaller by kept/all
    assert abs(metrics["learner/loss"] - expected * kept_tokens / all_tokens) > 0.1


def _grouped_batch(seed: int) -> Batch:
    """Two groups of four samples, each group on one prompt; rewards vary in a group."""
    rng = random.Random(seed)
    groups = []
    for g in range(2):
        prompt = [rng.randrange(5, 300) for _ in range(rng.randrange(15, 30))]
        trajectories = []
        for i in range(4):
            generated = [rng.randrange(5, 300) for _ in range(rng.randrange(4, 10))]
            t = Trajectory(f"{g}/{i}", str(g), "synthetic", g, len(prompt))
            t.append(prompt, generated=False)
            t.append(generated, True, [-3.0] * len(generated), [0] * len(generated))
            t.reward = float(i % 2) + 0.1 * g
            trajectories.append(t)
        groups.append(Group(str(g), "synthetic", g, trajectories))
    return Batch(groups, 0)


def _two_steps(run, tiny_policy, directory, share_prefix: bool):
    cfg = small_run_config(directory)
    cfg.learner.share_prefix = share_prefix
    cfg.algo.entropy_coef = 0.01  # the entropy's gradient goes through the shared path too
    cfg.algo.kl_coef = 0.05  # and the reference model's forward
    group = run(LearnerGroup.start(cfg, tiny_policy))
    try:
        metrics = [run(group.train_step(_grouped_batch(seed))) for seed in range(2)]
        weights = _weights(run, group, directory / "w", 2)
    finally:
        group.kill()
    return metrics, weights


def test_shared_prompts_train_exactly_as_unshared_ones_on_fewer_positions(
    ray_cluster, tiny_policy, tmp_path, event_loop_runner
):
    from safetensors.torch import load_file

    plain_metrics, plain = _two_steps(event_loop_runner, tiny_policy, tmp_path / "off", False)
    shared_metrics, shared = _two_steps(event_loop_runner, tiny_policy, tmp_path / "on", True)
    initial = load_file(f"{tiny_policy}/model.safetensors")
    moved = max(float((plain[k] - initial[k]).abs().max()) for k in initial)
    assert _largest_change(plain, shared) < 1e-5 < moved / 10
    for ours, theirs in zip(shared_metrics, plain_metrics, strict=True):
        assert ours["learner/tokens"] == theirs["learner/tokens"]
        for name in ("learner/loss", "learner/entropy", "learner/grad_norm"):
            assert ours[name] == pytest.approx(theirs[name], rel=1e-4), name
        assert ours["learner/forward_tokens"] < 0.7 * theirs["learner/forward_tokens"]


def _plain_torch_steps(policy: str, batches: list[Batch], lr: float, clip: float):
    """GRPO steps as TRL's GRPOTrainer takes them at ratio 1, in plain torch on the
    Hugging Face model, one per batch with one AdamW (no weight decay) throughout:
    group-normalised advantages (trl/trainer/grpo_trainer.py,
    `_generate_and_score_completions`: (r - mean) / (std + eps), the group's sample
    std), its default `dapo` loss -sum(A * logp over completion tokens) / completion
    tokens of the batch (`_compute_loss`), the gradient clipped to `clip`. Returns
    each step's pre-clip gradient norm and the weights after the last."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    norms = []
    for batch in batches:
        optimizer.zero_grad()
        _grpo_loss(model, batch).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
        optimizer.step()
    return norms, {name: p.detach().clone() for name, p in model.named_parameters()}


def _grpo_loss(model, batch: Batch) -> torch.Tensor:
    tokens = sum(t.num_generated for t in batch.trajectories)
    loss = torch.zeros(())
    for g in batch.groups:
        rewards = torch.tensor(g.rewards, dtype=torch.float64)
        advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
        for t, advantage in zip(g.trajectories, advantages, strict=True):
            ids = torch.tensor([t.tokens])
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            taken = logp.gather(-1, ids[0, 1:, None])[:, 0]
            mask = torch.tensor(t.loss_mask[1:], dtype=torch.float32)
            loss = loss - float(advantage) * (taken * mask).sum() / tokens
    return loss


def test_learner_steps_are_the_plain_torch_grpo_steps(
    ray_cluster, tiny_policy, tmp_path, event_loop_runner
):
    """The rank's GRPO updates on three batches in a row (each on its own logprobs
    at the time: ratio 1) are the ones a plain torch loop takes with TRL's formulas
    and one AdamW: the same pre-clip gradient norm at every step, and weights that
    move the same way. Adam's first step moves a weight by ~lr times the sign of its
    gradient, so a token weighted otherwise (per sequence, say, or a sample left
    out) shows as weights moved the other way; later steps carry Adam's moments, so
    an optimizer state that is lost or not carried shows too."""
    from safetensors.torch import load_file

    run = event_loop_runner
    cfg = small_run_config(tmp_path)
    cfg.learner.lr = 1e-4
    rewards = [[1.1, 0.1, 0.1, 0.0], [0.1, 0.1, 1.1, 1.1], [0.0, 0.1, 0.1, 0.1]]
    group = run(LearnerGroup.start(cfg, tiny_policy))
    batches, metrics = [], []
    try:
        for step in range(3):
            batches.append(
                _on_policy_batch(run, group, rewards[step:] + rewards[:step], seed=3 + step)
            )
            metrics.append(run(group.train_step(batches[-1])))
        ours = _weights(run, group, tmp_path / "w", 3)
    finally:
        group.kill()
    norms, theirs = _plain_torch_steps(tiny_policy, batches, cfg.learner.lr, cfg.learner.grad_clip)
    initial = load_file(f"{tiny_policy}/model.safetensors")
    names = sorted(set(ours) & set(theirs) & set(initial))
    assert len(names) >= len(initial) - 1, "the two sides name the weights differently"
    assert [m["learner/grad_norm"] for m in metrics] == pytest.approx(norms, rel=1e-3)
    moved_ours = torch.cat([(ours[n] - initial[n]).flatten() for n in names])
    moved_theirs = torch.cat([(theirs[n] - initial[n]).flatten() for n in names])
    assert float(moved_theirs.abs().max()) > 1e-4, "the reference steps moved nothing"
    agreement = torch.nn.functional.cosine_similarity(moved_ours, moved_theirs, dim=0)
    assert float(agreement) > 0.999
    assert float(((moved_ours - moved_theirs).abs() > 1e-5).float().mean()) < 1e-3
