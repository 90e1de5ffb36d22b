"""What every benchmark (and the chaos run) starts with, written once.

- `parser(__doc__)`: the command line, with the module docstring as its help and
  `--json PATH` (bench.record); `model=True` adds `--model PATH`.
- `environment(vllm=...)`: no hub downloads, and for benchmarks that start vLLM
  engines in this process a small KV cache and quiet logs.
- `policy(path)`: the checkpoint to measure, resolved as a run resolves
  model.path (bootstrap.policy); no path: the default tiny policy, built once.
- `run_config(defaults, overrides)`: the Config `python -m rollout.launch
  <defaults> <overrides>` would run (core.compose), a benchmark's defaults
  overridden key by key by the user's, a bad override refused in one line.

Nothing here measures anything.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bootstrap.policy import resolve_policy
from core.compose import ConfigError, compose
from core.config import Config, ModelConfig
from orchestrator.cli import check_overrides, normalize

KV_CACHE_GIB = "1"
"""VLLM_CPU_KVCACHE_SPACE for engines a benchmark starts itself (24 GiB machine)."""


def parser(doc: str | None, model: bool = False, json: bool = True) -> argparse.ArgumentParser:
    """An argument parser whose help is `doc` (the benchmark's docstring)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if model:
        parser.add_argument(
            "--model", default=None, help="checkpoint directory (default: the tiny policy)"
        )
    if json:
        parser.add_argument("--json", default=None, help="also write the results here as JSON")
    return parser


def environment(vllm: bool = False) -> None:
    """Defaults for this process's environment (a value already set is kept)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if vllm:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", KV_CACHE_GIB)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def policy(path: str | None = None) -> str:
    """The directory to load: `path` as a run's model.path, or the default tiny policy."""
    return resolve_policy(ModelConfig(path=path))


def model_cache() -> Path:
    """Where the tiny policy (and models a benchmark builds) are cached."""
    return Path(ModelConfig().cache_dir).expanduser()


def run_config(defaults: list[str], overrides: list[str]) -> Config:
    """The checked Config of `rollout.launch <defaults> <overrides>`, written to
    config.yaml in its (new) run directory. Raises ConfigError, one line, on a bad
    override."""
    from omegaconf import OmegaConf

    argv = normalize(merge(defaults, overrides))
    if problem := check_overrides(argv):
        raise ConfigError(problem)
    cfg = compose(argv)
    run_dir = Path(cfg.logger.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return cfg


def merge(defaults: list[str], overrides: list[str]) -> list[str]:
    """`defaults` with every key that `overrides` sets replaced by the override."""
    keys = {_key(o) for o in overrides}
    return [d for d in defaults if _key(d) not in keys] + overrides


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")
