"""Which policy a run starts from: a given checkpoint, or the tiny local one.

`resolve_policy` returns a local directory that vLLM and transformers both
load. A `model.path` is used as given (a directory, or a hub id already in the
local Hugging Face cache: this never downloads weights). Without a path, the
tiny Qwen3 policy is built once and cached under `model.cache_dir`, keyed by a
hash of everything that shapes it: demonstration dialogues from the calculator
env's scripted assistant, a tokenizer trained on them, a model from config and
a short supervised warm-up (learner.bootstrap does the building).

With `model.chat_template` set, the run sees the checkpoint through a directory
of links to its files plus that template (`chat_template.jinja`, which
transformers reads before tokenizer_config.json's): the user's checkpoint is
never changed, and every process (engines, env pools, learner, the exported
final model) loads the same tokenizer.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.chat import BUILTIN_TEMPLATES, QWEN_STYLE_TEMPLATE, ChatCodec
from core.config import ConfigError, ModelConfig, TinyModelConfig

log = logging.getLogger(__name__)

BOOTSTRAP_VERSION = 1
"""Bump when the bootstrap recipe changes, so cached models are rebuilt."""
DEMO_ENV = "asyncrl/Calculator-v0"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
"""Where transformers 5 keeps a tokenizer's template (read over tokenizer_config.json's:
transformers/tokenization_utils_base.py:1786-1799)."""


def resolve_policy(cfg: ModelConfig) -> str:
    if cfg.path:
        path = _existing_checkpoint(cfg.path)
    else:
        path = ensure_tiny_policy(cfg.tiny, Path(cfg.cache_dir).expanduser(), cfg.name)
    if cfg.chat_template is None:
        return path
    template = chat_template_source(cfg.chat_template)
    return with_chat_template(Path(path), template, Path(cfg.cache_dir).expanduser())


def chat_template_source(choice: str) -> str:
    """model.chat_template's text: a built-in template by name, or a file's content."""
    if choice in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[choice]
    file = Path(choice).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"model.chat_template={choice!r} is neither a built-in template "
            f"({', '.join(sorted(BUILTIN_TEMPLATES))}) nor a file"
        )
    return file.read_text()


def with_chat_template(checkpoint: Path, template: str, cache_dir: Path) -> str:
    """A directory that links every file of `checkpoint` and adds `template` as its
    chat_template.jinja; cached by checkpoint path and template."""
    key = json.dumps({"checkpoint": str(checkpoint.resolve()), "template": template})
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    target = cache_dir / "with-template" / f"{checkpoint.name}-{digest}"

    def build(staging: Path) -> None:
        for item in checkpoint.iterdir():
            if item.name not in (CHAT_TEMPLATE_FILE, "chat_template", "READY"):
                (staging / item.name).symlink_to(item.resolve())
        (staging / CHAT_TEMPLATE_FILE).write_text(template)

    return cached_build(target, build)


def export_tokenizer(model_path: str, directory: str) -> None:
    """Write the policy's tokenizer (files and chat template) beside exported
    weights, so `directory` loads on its own with transformers and vLLM."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(model_path).save_pretrained(directory)


def tiny_policy_dir(tiny: TinyModelConfig, cache_dir: Path, name: str) -> Path:
    recipe = {"version": BOOTSTRAP_VERSION, "env": DEMO_ENV, **dataclasses.asdict(tiny)}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / f"{name}-{digest}"


def ensure_tiny_policy(tiny: TinyModelConfig, cache_dir: Path, name: str) -> str:
    """The cached tiny policy's directory, building it first if needed."""
    target = tiny_policy_dir(tiny, cache_dir, name)
    return cached_build(target, lambda staging: _build_tiny_policy(tiny, staging))


def cached_build(target: Path, build: Callable[[Path], None]) -> str:
    """`target`, built once by `build(staging_dir)` and moved into place whole.

    Builders of the same target wait for each other on a lock file beside it; a
    build that died half-way (no READY marker) is thrown away and redone.
    """
    ready = target / "READY"
    if ready.exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same model
        if not ready.exists():
            staging = target.with_name(target.name + ".partial")
            for leftover in (staging, target):
                shutil.rmtree(leftover, ignore_errors=True)
            staging.mkdir()
            build(staging)
            staging.rename(target)
            ready.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    return str(target)


def _build_tiny_policy(tiny: TinyModelConfig, staging: Path) -> None:
    import torch

    from envs import make_env
    from envs.calculator import scripted_episode
    from learner.bootstrap import (
        TinyArchitecture,
        WarmupSettings,
        build_model,
        build_tokenizer,
        sft_warmup,
    )

    started = time.perf_counter()
    log.info("building the tiny policy %s (cached for later runs)", staging.stem)
    env = make_env(DEMO_ENV)
    rng = random.Random(tiny.seed)
    first_seed = 10**9 + tiny.seed * tiny.demos  # away from the seeds RL tasks use
    dialogues = [
        scripted_episode(env, seed, use_tool=rng.random() < tiny.tool_use_fraction)
        for seed in range(first_seed, first_seed + tiny.demos)
    ]
    render = corpus_template()
    corpus = [render.render(messages=d, tools=env.tool_schemas) for d in dialogues]
    tokenizer = build_tokenizer(corpus, tiny.vocab_size)
    codec = ChatCodec(tokenizer, env.tool_schemas)
    examples = [codec.dialogue_ids(d, num_opening=2) for d in dialogues]
    arch = TinyArchitecture(
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_layers=tiny.num_layers,
        num_heads=tiny.num_heads,
        num_kv_heads=tiny.num_kv_heads,
        head_dim=tiny.head_dim,
        num_experts=tiny.num_experts,
        experts_per_token=tiny.experts_per_token,
        moe_intermediate_size=tiny.moe_intermediate_size,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    model = build_model(tokenizer, arch, tiny.seed)
    settings = WarmupSettings(
        steps=tiny.warmup_steps,
        batch_size=tiny.warmup_batch_size,
        lr=tiny.warmup_lr,
        seed=tiny.seed,
    )
    losses = sft_warmup(model, examples, settings, tokenizer.pad_token_id)
    torch.set_num_threads(threads)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "bootstrap.json").write_text(
        json.dumps({"recipe": dataclasses.asdict(tiny), "final_loss": losses[-1]}, indent=2)
    )
    log.info(
        "tiny policy ready in %.0fs: %d parameters, warm-up loss %.3f",
        time.perf_counter() - started,
        sum(p.numel() for p in model.parameters()),
        losses[-1],
    )


def corpus_template(source: str = QWEN_STYLE_TEMPLATE) -> Any:
    """The chat template (`source`) as plain jinja, to render tokenizer-training
    text before any tokenizer exists."""
    import jinja2

    environment = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    environment.filters["tojson"] = json.dumps
    return environment.from_string(source)


def _existing_checkpoint(path: str) -> str:
    local = Path(path).expanduser()
    if local.is_dir():
        return str(local)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any miss means "not here"
        raise ConfigError(
            f"model.path={path!r} is neither a directory nor a model in the local Hugging Face "
            f"cache; asyncrl never downloads weights at run time: fetch it first "
            f"(`huggingface-cli download {path}`) or point model.path at a directory"
        ) from exc
