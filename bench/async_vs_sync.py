"""Asynchronous vs synchronous training of the same workload, side by side in one
run (not a test).

    python -m bench.async_vs_sync [--steps 30] [--tool-latency 0.5] [--slow-rate 0.1]
        [--slow-latency 4] [--wide-staleness 4] [--workers 1] [--json PATH] [override ...]

Every run uses the default agentic experiment with the same steps, seed and
machine, `--workers` rollout workers (one by default: on CPU its engine is bound to
core 0 and the learner to core 1, rollout and learner on disjoint cores, this
machine's stand-in for separate devices; in sync mode the learner takes both cores,
and in async it borrows the engine's core while that idles), and a calculator that
answers like a shared remote tool (`--tool-latency` seconds per call, and `--slow-rate` of the calls
take `--slow-latency` seconds: the stragglers an agentic batch waits for).
Runs: `trainer.mode=sync` (generate a batch, train, publish, repeat: staleness
0), then `mode=async` as configured (`buffer.max_staleness=1`), then async with
`buffer.max_staleness=--wide-staleness` (0 skips it). Printed: wall time of the
training loop each (the system's start-up is left out), the speed-ups over
sync, the reward over the last fifth of each run, the reward at equal wall time
(at the time the fastest run finished: the mean reward of each run's steps that
finished in the last fifth of that time), and the staleness of the groups the
async learners were served. `--json PATH` also writes these and every run's
per-step curves (bench.record).
"""

from __future__ import annotations

import argparse
import asyncio

from bench.preamble import environment, parser, run_config
from bench.record import write_json
from core.config import Config
from orchestrator.assembly import RunState

SPEEDUP_GOAL = 3
"""Issue 18: on this long-tail workload, rollout and learner on disjoint cores, async
trains the same steps >= 3x faster than sync."""


def main() -> None:
    args = _parse()
    environment()
    variants = _variants(args).items()
    configs = {name: _config_of(mode, extra, args) for name, (mode, extra) in variants}
    results = {name: _train(cfg) for name, cfg in configs.items()}
    sync = results["sync"]
    print(
        f"\nasync vs sync ({args.steps} steps each, tool latency {args.tool_latency}s, "
        f"{args.slow_rate:.0%} of calls {args.slow_latency}s)"
    )
    for name, state in results.items():
        print(
            f"  {name:<10} wall {_wall(state):7.1f}s   reward (last fifth) "
            f"{_last_fifth_reward(state):.3f}"
        )
    speedups = {name: _wall(sync) / _wall(state) for name, state in results.items()}
    for name in results.keys() - {"sync"}:
        print(f"  {name} speed-up: {speedups[name]:.2f}x  (goal >= {SPEEDUP_GOAL}x)")
    equal = min(_wall(state) for state in results.values())
    at_equal = {name: reward_at(state.history, equal) for name, state in results.items()}
    print(
        f"  reward at equal wall time ({equal:.0f}s, steps finished in its last fifth): "
        + " / ".join(f"{name} {reward:.3f}" for name, reward in at_equal.items())
    )
    served = {name: _served(state) for name, state in results.items() if name != "sync"}
    for name, counts in served.items():
        print(f"  {name}: groups served by staleness (versions behind): {counts}")
    write_json(
        args.json,
        "async_vs_sync",
        {
            "steps": args.steps,
            "tool_latency_s": args.tool_latency,
            "tool_slow_rate": args.slow_rate,
            "tool_slow_latency_s": args.slow_latency,
            "wide_staleness": args.wide_staleness,
            "workers": args.workers,
            "max_staleness_by_run": {n: cfg.buffer.max_staleness for n, cfg in configs.items()},
            "overrides": args.overrides,
            "speedups": {name: speedups[name] for name in served},
            "equal_wall_s": equal,
            "served_staleness_by_run": served,
            **{name: _summary(state, equal, at_equal[name]) for name, state in results.items()},
        },
    )


def _variants(args: argparse.Namespace) -> dict[str, tuple[str, list[str]]]:
    """name -> (trainer.mode, extra overrides): sync, async as configured, and async
    with the wider staleness bound when asked."""
    variants = {"sync": ("sync", []), "async": ("async", [])}
    if args.wide_staleness:
        variants["async_wide"] = ("async", [f"buffer.max_staleness={args.wide_staleness}"])
    return variants


def _served(state: RunState) -> dict[str, int]:
    return {
        key.rsplit("_", 1)[-1]: int(value)
        for key, value in state.history[-1].items()
        if key.startswith("buffer/served_staleness_")
    }


def reward_at(history: list[dict[str, float]], wall_s: float) -> float:
    """Mean reward of the steps that finished within the last fifth of the first
    `wall_s` seconds (the last step finished by then when none did)."""
    done = [h for h in history if h["perf/elapsed_s"] <= wall_s and "rollout/reward_mean" in h]
    if not done:
        return float("nan")
    window = [h["rollout/reward_mean"] for h in done if h["perf/elapsed_s"] >= 0.8 * wall_s]
    window = window or [done[-1]["rollout/reward_mean"]]
    return sum(window) / len(window)


def _summary(state: RunState, equal_wall_s: float, reward_at_equal: float) -> dict:
    """One run's headline numbers and per-step curves, for the report."""
    history = state.history

    def mean(key: str) -> float:
        values = [h[key] for h in history if key in h]
        return sum(values) / len(values) if values else float("nan")

    return {
        "wall_s": _wall(state),
        "reward_last_fifth": _last_fifth_reward(state),
        "reward_at_equal_wall": reward_at_equal,
        "steps_by_equal_wall": sum(h["perf/elapsed_s"] <= equal_wall_s for h in history),
        "step_s_mean": mean("perf/step_s"),
        "learner_step_s_mean": mean("perf/learner_step_s"),
        "learner_wait_s_mean": mean("perf/learner_wait_s"),
        "sync_pause_s_mean": mean("sync/pause_s"),
        "export_s_mean": mean("sync/export_s"),
        "rollout_tokens_per_s_mean": mean("perf/rollout_tokens_per_s"),
        "peak_memory_gib": max((h.get("perf/memory_gib", 0.0) for h in history), default=0.0),
        "elapsed_s": [h["perf/elapsed_s"] for h in history],
        "reward": [h.get("rollout/reward_mean", float("nan")) for h in history],
    }


def _train(cfg: Config) -> RunState:
    from orchestrator.run import run

    return asyncio.run(run(cfg))


def _config_of(mode: str, extra: list[str], args: argparse.Namespace) -> Config:
    return run_config(
        [
            "+experiment=agentic_grpo",
            f"trainer.mode={mode}",
            f"trainer.total_steps={args.steps}",
            "trainer.checkpoint_every=0",
            f"rollout.num_workers={args.workers}",
            f"+env.kwargs.tool_latency_s={args.tool_latency}",
            f"+env.kwargs.tool_slow_rate={args.slow_rate}",
            f"+env.kwargs.tool_slow_latency_s={args.slow_latency}",
            f"logger.run_dir=runs/bench-async-vs-sync/{mode}{len(extra) or ''}",
            "logger.wandb.enabled=false",
            "logger.progress=false",
        ],
        [*args.overrides, *extra],
    )


def _wall(state: RunState) -> float:
    return state.history[-1]["perf/elapsed_s"]


def _last_fifth_reward(state: RunState) -> float:
    rewards = [h["rollout/reward_mean"] for h in state.history if "rollout/reward_mean" in h]
    if not rewards:
        return float("nan")
    fifth = max(1, len(rewards) // 5)
    return sum(rewards[-fifth:]) / fifth


def _parse() -> argparse.Namespace:
    args = parser(__doc__)
    args.add_argument("--steps", type=int, default=30)
    args.add_argument("--tool-latency", type=float, default=0.5, help="seconds per call")
    args.add_argument("--slow-rate", type=float, default=0.1, help="share of slow calls")
    args.add_argument("--slow-latency", type=float, default=4.0, help="seconds per slow call")
    args.add_argument(
        "--wide-staleness",
        type=int,
        default=4,
        help="also run async with buffer.max_staleness=N (0: skip)",
    )
    args.add_argument(
        "--workers", type=int, default=1, help="rollout workers (1: disjoint cores on CPU)"
    )
    args.add_argument("overrides", nargs="*", help="more config overrides for both runs")
    return args.parse_args()


if __name__ == "__main__":
    main()
