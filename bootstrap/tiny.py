"""The tiny policy's recipe, and the cache that keeps it: `ensure_tiny_policy`.

Demonstration dialogues come from the calculator env's scripted assistant
(seeds far from those RL tasks use); a tokenizer is trained on their rendered
text, a model is built from model.tiny and warmed up on them (bootstrap.build),
and the result is saved under `model.cache_dir` in a directory named by a hash
of everything that shapes it, so a later run with the same settings loads it
at once. Change the recipe in a way the settings do not show: bump
BOOTSTRAP_VERSION, and old entries are rebuilt instead of reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from bootstrap.cache import cached_build
from core.chat import ChatCodec, Message
from core.config import TinyModelConfig

log = logging.getLogger(__name__)

BOOTSTRAP_VERSION = 1
"""Bump when the bootstrap recipe changes, so cached models are rebuilt."""
DEMO_ENV = "asyncrl/Calculator-v0"


QWEN3_5_FIELDS = (
    "architecture",
    "full_attention_interval",
    "linear_key_heads",
    "linear_value_heads",
    "linear_head_dim",
    "mtp_layers",
)
"""model.tiny fields that shape only a qwen3_5 policy: a Qwen3 recipe's key leaves them
out, so the Qwen3 policies cached before they existed keep their directories."""


def tiny_policy_dir(tiny: TinyModelConfig, cache_dir: Path, name: str) -> Path:
    """Where the policy `tiny` describes is cached (the key existing caches use)."""
    fields = dataclasses.asdict(tiny)
    if tiny.architecture == "qwen3":
        fields = {k: v for k, v in fields.items() if k not in QWEN3_5_FIELDS}
    else:
        fields["architecture"] = str(tiny.architecture)
    recipe = {"version": BOOTSTRAP_VERSION, "env": demo_env(tiny), **fields}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / f"{name}-{digest}"


def demo_env(tiny: TinyModelConfig) -> str:
    """The env whose scripted dialogues the policy is warmed up on."""
    from bootstrap.tiny_vl import DEMO_ENV as VL_DEMO_ENV

    return VL_DEMO_ENV if tiny.architecture == "idefics3" else DEMO_ENV


def ensure_tiny_policy(tiny: TinyModelConfig, cache_dir: Path, name: str) -> str:
    """The cached tiny policy's directory, building it first if needed."""
    target = tiny_policy_dir(tiny, cache_dir, name)
    return cached_build(target, lambda staging: build_tiny_policy(tiny, staging))


def demonstrations(tiny: TinyModelConfig) -> tuple[list[list[Message]], list[dict[str, Any]]]:
    """(`tiny.demos` scripted calculator dialogues, the env's tool schemas)."""
    from envs import make_env
    from envs.calculator import scripted_episode

    env = make_env(DEMO_ENV)
    rng = random.Random(tiny.seed)
    first_seed = 10**9 + tiny.seed * tiny.demos  # away from the seeds RL tasks use
    dialogues = [
        scripted_episode(env, seed, use_tool=rng.random() < tiny.tool_use_fraction)
        for seed in range(first_seed, first_seed + tiny.demos)
    ]
    return dialogues, env.tool_schemas


def build_tiny_policy(tiny: TinyModelConfig, staging: Path) -> None:
    """Build the policy `tiny` describes into `staging` (tokenizer, weights, bootstrap.json)."""
    import torch

    from bootstrap.build import (
        add_mtp_weights,
        build_model,
        build_tokenizer,
        corpus_template,
        sft_warmup,
    )

    started = time.perf_counter()
    log.info("building the tiny policy %s (cached for later runs)", staging.stem)
    if tiny.architecture == "idefics3":
        from bootstrap.tiny_vl import build_tiny_vl_policy

        losses = build_tiny_vl_policy(tiny, staging)
        _record(staging, tiny, losses, started)
        return
    dialogues, tools = demonstrations(tiny)
    render = corpus_template()
    corpus = [render.render(messages=d, tools=tools) for d in dialogues]
    tokenizer = build_tokenizer(corpus, tiny.vocab_size)
    codec = ChatCodec(tokenizer, tools)
    examples = [codec.dialogue_ids(d, num_opening=2) for d in dialogues]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    model = build_model(tokenizer, tiny, tiny.seed)
    losses = sft_warmup(model, examples, tiny, tokenizer.pad_token_id)
    torch.set_num_threads(threads)
    model.save_pretrained(staging)
    add_mtp_weights(model, staging)
    tokenizer.save_pretrained(staging)
    _record(staging, tiny, losses, started)


def _record(staging: Path, tiny: TinyModelConfig, losses: list[float], started: float) -> None:
    """bootstrap.json (the recipe and the final warm-up loss) and one log line."""
    final = losses[-1] if losses else float("nan")
    (staging / "bootstrap.json").write_text(
        json.dumps({"recipe": dataclasses.asdict(tiny), "final_loss": final}, indent=2)
    )
    log.info("tiny policy ready in %.0fs, warm-up loss %.3f", time.perf_counter() - started, final)
