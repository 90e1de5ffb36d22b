"""`python -m bench.chaos [--seed N] [--kills N] [overrides...]` (`make chaos`).

Composes the run's config as `rollout.launch` would (bench.preamble.run_config,
DEFAULT_OVERRIDES under the command line's), runs it with a `ChaosDriver` beside
the loop, writes `<run_dir>/chaos.json`, prints the report and exits 1 when the
verdict names any problem (2 on a config error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from bench.chaos.driver import ChaosDriver
from bench.chaos.schedule import ChaosConfig, plan
from bench.chaos.verdict import print_report, report
from bench.preamble import environment, run_config
from core.config import ConfigError
from orchestrator.checkpoint import checkpoints_dir, latest

log = logging.getLogger("bench.chaos")

DEFAULT_OVERRIDES = [
    "+experiment=agentic_grpo",
    # Shortened to ~8 minutes on 2 CPU cores: ~6 of training, enough for the default 10
    # kills and their recoveries (a replaced vLLM worker takes ~85 s here). A seed that
    # draws more rollout kills needs more steps: trainer.total_steps=...
    "trainer.total_steps=180",
    "trainer.checkpoint_every=4",  # a restored learner loses at most 4 steps
    "env.group_size=4",
    "buffer.groups_per_batch=4",
    # Two engines, so a killed one leaves the other generating (with a single engine
    # a publish during its replacement has no worker to load: NoLiveWorkers).
    "rollout.num_workers=2",
    "supervisor.interval_s=1.0",
    "logger.wandb.enabled=false",
    "logger.progress=false",
    "logger.plot_every=0",
    "hydra.run.dir=runs/${now:%Y-%m-%d}/${now:%H-%M-%S}-chaos",  # logger.run_dir's default
]


def prune_checkpoints(run_dir: str) -> None:
    """Keep only the newest checkpoint: the others served the restores during the
    run (every few steps, ~13 MB each for the tiny model)."""
    keep = latest(checkpoints_dir(run_dir))
    for directory in checkpoints_dir(run_dir).glob("step-*"):
        if keep is None or directory.name != keep.name:
            shutil.rmtree(directory, ignore_errors=True)


def parse(argv: list[str]) -> tuple[ChaosConfig, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="A training run while random actors are killed; exit 1 on any "
        "unaccounted trajectory.",
        epilog="Anything else is a Hydra override of the run, e.g. trainer.total_steps=200.",
    )
    defaults = ChaosConfig()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--min-interval", type=float, default=defaults.min_interval_s)
    parser.add_argument("--max-interval", type=float, default=defaults.max_interval_s)
    parser.add_argument(
        "--targets",
        default=",".join(defaults.targets),
        help="comma-separated: rollout,pool,learner",
    )
    parser.add_argument("--recovery-timeout", type=float, default=defaults.recovery_timeout_s)
    args, overrides = parser.parse_known_args(argv)
    chaos = ChaosConfig(
        seed=args.seed,
        kills=args.kills,
        min_interval_s=args.min_interval,
        max_interval_s=args.max_interval,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        recovery_timeout_s=args.recovery_timeout,
    )
    # Deliberate kills must not trip the breakers meant for components that keep failing.
    return chaos, [f"supervisor.max_restarts={max(3, chaos.kills + 1)}", *overrides]


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        chaos, overrides = parse(argv)
        plan(chaos)
        cfg = run_config(DEFAULT_OVERRIDES, overrides)
    except ConfigError as exc:
        print(f"asyncrl chaos: config error: {exc}", file=sys.stderr)
        return 2
    from orchestrator.run import run

    driver = ChaosDriver(chaos, cfg.logger.run_dir)
    started = time.perf_counter()
    state, error = None, None
    try:
        state = asyncio.run(run(cfg, alongside=driver))
    except Exception as exc:  # noqa: BLE001 - reported as the verdict, not a stack trace only
        log.exception("chaos run failed")
        error = f"{type(exc).__name__}: {exc}"
    summary = report(chaos, cfg, driver, state, time.perf_counter() - started, error)
    (Path(cfg.logger.run_dir) / "chaos.json").write_text(json.dumps(summary, indent=2))
    prune_checkpoints(cfg.logger.run_dir)
    print_report(summary)
    print(f"report: {Path(cfg.logger.run_dir) / 'chaos.json'}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    environment()
    sys.exit(main(sys.argv[1:]))
