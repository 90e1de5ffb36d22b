"""Shared prompts computed once (learner.shared_prefix) give the unshared forward
pass's logprobs and gradients on a real (tiny, random) Qwen3: groups with prompts of
different lengths, continuations of different lengths with untrained tokens inside
(a tool's output), padding everywhere."""

from __future__ import annotations

import pytest
import torch

from core.types import RoutedExperts
from learner.batching import Sample, collate
from learner.shared_prefix import forward_logits, prompt_lengths, supports_shared_prefix
from learner.trainer import token_logprobs

VOCAB = 64


def _config(**extra):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=128,
        **extra,
    )


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    return Qwen3ForCausalLM(_config(initializer_range=0.2)).float().train()


def _groups(prompts: list[int], size: int, seed: int = 0) -> list[Sample]:
    """`size` samples per prompt length: a shared prompt, then generated tokens with a
    3-token untrained observation in the middle of some."""
    rng = torch.Generator().manual_seed(seed)
    samples = []
    for n in prompts:
        prompt = torch.randint(1, VOCAB, (n,), generator=rng).tolist()
        for i in range(size):
            first = torch.randint(1, VOCAB, (2 + i,), generator=rng).tolist()
            mask = [0] * n + [1] * len(first)
            tokens = prompt + first
            if i % 2:
                tail = torch.randint(1, VOCAB, (3 + 2,), generator=rng).tolist()
                tokens, mask = tokens + tail, mask + [0, 0, 0, 1, 1]
            lp = (-torch.rand(len(tokens), generator=rng)).tolist()
            samples.append(Sample(tokens, mask, lp, float(i) - 1.5, 0, weight=0.1))
    return samples


def _trained_logprobs(model, micro) -> torch.Tensor:
    logits = forward_logits(model, micro.input_ids, micro.attention_mask, micro.prefixes)
    logprobs, _ = token_logprobs(logits, micro.targets, 1.0, entropy_grad=False)
    return logprobs[micro.loss_mask.bool()]


def _gradients(model, micro) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    logprobs = _trained_logprobs(model, micro)
    (logprobs * micro.advantages[micro.loss_mask.bool()]).sum().backward()
    return logprobs.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_shared_prompts_give_the_unshared_logprobs_and_gradients(model):
    samples = _groups([5, 9, 3], size=4)
    plain, shared = collate(samples, pad_id=0), collate(samples, pad_id=0, share_prefix=True)
    assert plain.prefixes is None and shared.prefixes is not None
    assert shared.prefixes.ids.shape[0] == 3  # one row per distinct prompt
    assert shared.forward_tokens < plain.forward_tokens
    assert torch.equal(
        shared.targets[shared.loss_mask.bool()], plain.targets[plain.loss_mask.bool()]
    )
    assert float(shared.weights.sum()) == pytest.approx(float(plain.weights.sum()))

    plain_lp, plain_grads = _gradients(model, plain)
    shared_lp, shared_grads = _gradients(model, shared)
    assert torch.allclose(shared_lp, plain_lp, atol=1e-5)
    for name, grad in plain_grads.items():
        assert torch.allclose(shared_grads[name], grad, atol=1e-5, rtol=1e-4), name


def test_a_continuation_one_position_off_is_caught(model):
    """The check above fails when the continuation's positions are off by one (what a
    wrong offset after a padded prompt would do)."""
    samples = _groups([5, 9], size=2)
    plain, shared = collate(samples, pad_id=0), collate(samples, pad_id=0, share_prefix=True)
    shared.prefixes.mask[:, 0] = 0  # every prompt one token shorter: positions shift
    with torch.no_grad():
        assert not torch.allclose(
            _trained_logprobs(model, shared), _trained_logprobs(model, plain), atol=1e-3
        )


def test_nothing_is_shared_where_nothing_can_be():
    distinct = _groups([4, 6], size=1)
    assert prompt_lengths([s.tokens for s in distinct], [s.loss_mask for s in distinct]) is None
    assert collate(distinct, pad_id=0, share_prefix=True).prefixes is None
    trained_from_the_start = [Sample([1, 2, 3], [1, 1, 1], [0.0] * 3, 1.0, 0)] * 2
    assert collate(trained_from_the_start, pad_id=0, share_prefix=True).prefixes is None
    routed = _groups([5], size=2)
    routed[0].routed_experts = RoutedExperts(1, 1, "uint8", [b"\x00"] * len(routed[0].tokens))
    assert collate(routed, pad_id=0, share_prefix=True).prefixes is None


def test_only_full_attention_models_share(model):
    from transformers import Qwen3ForCausalLM

    assert supports_shared_prefix(model)
    windowed = _config(use_sliding_window=True, sliding_window=8, max_window_layers=1)
    assert not supports_shared_prefix(Qwen3ForCausalLM(windowed))
