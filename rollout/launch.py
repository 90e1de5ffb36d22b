"""`python -m rollout.launch +experiment=agentic_grpo`: the Hydra entry point.

A Hydra app like any other (`--cfg job`, `--info`, `-m` sweeps, `--config-name`,
`--config-dir` behave as Hydra documents), with three things first: the
env-kwargs forms users type are rewritten into Hydra's, the overrides are
checked so that a bad key or value is one line on stderr (exit 2), and the
console is quieted (core.console). Then every check that needs no actor runs
(orchestrator.preflight: checkpoint, tokenizer, context length, env probe), each
failure one line and exit 2, and the run is handed to the control plane (the one
module in rollout/ that imports it). A wait that runs out during the run (every
wait is bounded: core.waits) ends it with one line naming the wait, exit 4, its
traceback kept in the run directory (TIMEOUT_DETAILS).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from core.config import Config, ConfigError, register_configs, validate
from core.waits import WaitTimeout
from orchestrator.cli import CONF_DIR, check_overrides, normalize
from orchestrator.preflight import check_trainable

__all__ = ["CONF_DIR", "check_overrides", "check_trainable", "main", "normalize"]

TIMEOUT_DETAILS = "timeout.txt"
"""Where a run that timed out keeps the traceback of the wait that ran out."""

register_configs()
log = logging.getLogger("asyncrl")


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(raw: DictConfig) -> None:
    from core.console import quiet

    quiet(bool(raw.logger.verbose))  # before anything heavy is imported
    from envs import EnvConfigError
    from orchestrator.env_faults import EnvCircuitOpen
    from orchestrator.preflight import EnvProbeError

    try:
        cfg: Config = OmegaConf.to_object(raw)
        validate(cfg)
        from orchestrator.run import run

        asyncio.run(run(cfg))
    except EnvProbeError as exc:
        print(exc.details, end="", file=sys.stderr)
        _fail(str(exc))
    except (ConfigError, EnvConfigError) as exc:
        _fail(str(exc))
    except EnvCircuitOpen as exc:
        print(f"asyncrl: {exc}", file=sys.stderr)
        sys.exit(3)
    except WaitTimeout as exc:
        _timed_out(exc, Path(raw.logger.run_dir))


def _timed_out(exc: WaitTimeout, run_dir: Path) -> None:
    """A bounded wait ran out: one line naming it, the traceback kept in the run dir."""
    import traceback

    run_dir.mkdir(parents=True, exist_ok=True)
    details = run_dir / TIMEOUT_DETAILS
    details.write_text("".join(traceback.format_exception(exc)))
    print(
        f"asyncrl: {exc}. If the machine is only slow, raise that wait's *_timeout_s key; "
        f"what each part was doing is in {details} and the run's log",
        file=sys.stderr,
    )
    sys.exit(4)


def _fail(message: str) -> None:
    print(f"asyncrl: config error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.argv[1:] = normalize(sys.argv[1:])
    if problem := check_overrides(sys.argv[1:]):
        _fail(f"{problem} (keys and their meaning: core/config.py)")
    main()
