"""Asynchronous vs synchronous training of the same workload, side by side in one
run (not a test).

    python -m bench.async_vs_sync [--steps 30] [--tool-latency 0.5] [override ...]

Both runs use the default agentic experiment with the same steps, seed and
machine, with a calculator that answers like a remote tool (`--tool-latency`
seconds per call) and two rollout workers: first `trainer.mode=sync`
(generate a batch, train, publish, repeat: staleness 0), then `mode=async`.
Printed: wall time of the training loop each (the system's start-up is left
out), the ratio, the reward over the last fifth of each run, and the staleness
of the groups the async learner was served.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from core.config import Config, register_configs, validate
from orchestrator.controller import RunState

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    args = _parse()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {mode: _run(mode, args) for mode in ("sync", "async")}
    sync, asynchronous = results["sync"], results["async"]
    print(f"\nasync vs sync ({args.steps} steps each, tool latency {args.tool_latency}s)")
    for mode, state in results.items():
        print(
            f"  {mode:<5} wall {_wall(state):7.1f}s   reward (last fifth) "
            f"{_last_fifth_reward(state):.3f}"
        )
    print(f"  async speed-up: {_wall(sync) / _wall(asynchronous):.2f}x  (goal >= 4x)")
    served = {
        key.rsplit("_", 1)[-1]: int(value)
        for key, value in asynchronous.history[-1].items()
        if key.startswith("buffer/served_staleness_")
    }
    print(f"  async: groups served by staleness (versions behind): {served}")


def _run(mode: str, args: argparse.Namespace) -> RunState:
    from orchestrator.run import run

    cfg = _config(
        [
            "+experiment=agentic_grpo",
            f"trainer.mode={mode}",
            f"trainer.total_steps={args.steps}",
            "trainer.checkpoint_every=0",
            "rollout.num_workers=2",
            f"+env.kwargs.tool_latency_s={args.tool_latency}",
            f"logger.run_dir=runs/bench-async-vs-sync/{mode}",
            "logger.wandb.enabled=false",
            "logger.progress=false",
            *args.overrides,
        ]
    )
    return asyncio.run(run(cfg))


def _config(overrides: list[str]) -> Config:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="config", overrides=overrides)
    cfg: Config = OmegaConf.to_object(raw)
    validate(cfg)
    return cfg


def _wall(state: RunState) -> float:
    return state.history[-1]["perf/elapsed_s"]


def _last_fifth_reward(state: RunState) -> float:
    rewards = [h["rollout/reward_mean"] for h in state.history]
    fifth = max(1, len(rewards) // 5)
    return sum(rewards[-fifth:]) / fifth


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tool-latency", type=float, default=0.5)
    parser.add_argument("overrides", nargs="*", help="more config overrides for both runs")
    return parser.parse_args()


if __name__ == "__main__":
    main()
