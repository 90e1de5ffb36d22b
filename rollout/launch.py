"""`python -m rollout.launch +experiment=agentic_grpo`: the Hydra entry point.

Parses and validates the config before anything heavy is imported: a bad key,
value or environment is one line on stderr (exit 2), never a stack trace. Then
it hands the run to the control plane (the one module in rollout/ that imports
it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from core.config import Config, ConfigError, register_configs, validate

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
register_configs()
log = logging.getLogger("asyncrl")


def check_overrides(argv: list[str]) -> str | None:
    """Compose the config with the command line's overrides; the first problem
    as one line, or None. Hydra's own report of the same error spans a page."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [arg for arg in argv if not arg.startswith("-")]
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            raw = compose("config", overrides=overrides, return_hydra_config=True)
        with open_dict(raw):  # resolve every interpolation but Hydra's own, as main will
            raw.logger.run_dir = "run_dir"
            del raw["hydra"]
        OmegaConf.to_object(raw)
    except (HydraException, OmegaConfBaseException) as exc:
        return _first_lines(exc)
    return None


def _first_lines(exc: BaseException) -> str:
    """The headline of an error and of its cause, without OmegaConf's key dump."""
    parts = []
    while exc is not None and len(parts) < 2:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if lines and not lines[0].startswith("To append"):
            parts.append(lines[0].rstrip("."))
        exc = exc.__cause__
    return ": ".join(parts) or "invalid configuration"


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(raw: DictConfig) -> None:
    from envs import EnvConfigError, make_env
    from orchestrator.env_faults import EnvCircuitOpen

    try:
        cfg: Config = OmegaConf.to_object(raw)
        validate(cfg)
        check_trainable(make_env(cfg.env.id, cfg.env.kwargs))  # fail here, not in an actor
        from orchestrator.run import run

        asyncio.run(run(cfg))
    except (ConfigError, EnvConfigError) as exc:
        _fail(str(exc))
    except EnvCircuitOpen as exc:
        print(f"asyncrl: {exc}", file=sys.stderr)
        sys.exit(3)


def check_trainable(env: Any) -> None:
    """Refuse, before anything starts, an env the learner cannot train on."""
    from envs import EnvConfigError
    from envs.base import shows_images

    if shows_images(env):
        raise EnvConfigError(
            f"{env.spec.id if env.spec else type(env).__name__} shows images, and the learner "
            "trains on text only for now (the rollout path serves images to a vision-language "
            "model: tests/integration/test_multimodal.py); pick a text env"
        )


def _fail(message: str) -> None:
    print(f"asyncrl: config error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("asyncrl").setLevel(logging.INFO)
    if problem := check_overrides(sys.argv[1:]):
        _fail(f"{problem} (keys and their meaning: core/config.py)")
    main()
