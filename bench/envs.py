"""Environment-plane benchmark: many concurrent episodes, env and loop overhead
only (not a test).

    python -m bench.envs [--episodes 10000] [--pools 2] [--json PATH]
    python -m bench.envs --sweep 1000,4000,10000 [--pools 2] [--json PATH]

`--episodes` calculator episodes run at once across `--pools` EnvPool actors,
through the real agent loop and router, against a policy actor that answers
instantly and correctly (it reads the question and the tool's result from the
prompt: a tool call, then the answer), so what is measured is the environment
and loop overhead, Ray calls included. Printed: episodes/s, the env pools' CPU
time per turn, p50/p99 wall time of an env step and of a turn's round trip to
the policy (with thousands of episodes per event loop these include queueing),
the peak memory of the env pools per concurrent episode, and the share of
episodes that scored.

`--sweep` runs several scales one after the other in one Ray session (fresh
pools and policy each) and ends with a table of them side by side, with each
scale's episodes/s relative to the smallest. `--json PATH` also writes the
numbers (bench.record).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time

import psutil

from bench.preamble import environment, parser, policy
from bench.record import write_json
from bench.sampling import PeriodicSampler
from core.config import Config, EnvConfig, RolloutConfig
from orchestrator.actors import start_ray
from rollout.engine import Generation, SamplingSpec

MIB = float(1 << 20)
QUESTION = re.compile(r"(\d[\d\s+\-*]*\d)")
RESULT = re.compile(r"<tool_response>\s*(-?[\d.]+)\s*</tool_response>")


class InstantPolicy:
    """Answers at once: a calculator call for the question, then its result."""

    def __init__(self, model_path: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.stop = [self.tokenizer.convert_tokens_to_ids("<|im_end|>")]

    async def generate(self, prompt_ids: list[int], spec: SamplingSpec, timeout_s: float):
        text = self.tokenizer.decode(prompt_ids[-160:])
        results = RESULT.findall(text)
        if results:
            reply = f"<answer>{results[-1]}</answer>"
        else:
            question = text.rsplit("user\n", 1)[-1]
            expression = QUESTION.findall(question)[-1]
            reply = (
                '<tool_call>\n{"name": "calculator", "arguments": {"expression": "'
                + expression
                + '"}}\n</tool_call>'
            )
        ids = self.tokenizer.encode(reply, add_special_tokens=False) + self.stop
        return Generation(ids, [0.0] * len(ids), [0] * len(ids), "stop", len(prompt_ids))


def main() -> None:
    args = _parse()
    environment()
    model = policy()
    start_ray(Config())
    scales = [int(n) for n in args.sweep.split(",")] if args.sweep else [args.episodes]
    results = []
    for episodes in scales:
        result = asyncio.run(_run(model, episodes, args.pools))
        results.append(result)
        print(f"\nenv benchmark: {episodes} concurrent episodes over {args.pools} env pools")
        for name, value in _rows(result):
            print(f"  {name:<44} {value}")
    if len(results) > 1:
        _print_sweep(results)
    write_json(args.json, "envs", {"pools": args.pools, "scales": results})


def _print_sweep(results: list[dict[str, float]]) -> None:
    base = results[0]["episodes_per_s"]
    print(f"\nenv-pool scale ({len(results)} scales, episodes/s relative to the smallest)")
    print(
        f"  {'concurrent':>10} {'episodes/s':>10} {'x smallest':>10} "
        f"{'CPU/turn ms':>11} {'KiB/episode':>11}"
    )
    for r in results:
        print(
            f"  {r['episodes']:>10.0f} {r['episodes_per_s']:>10.0f} "
            f"{r['episodes_per_s'] / base:>9.2f}x {r['cpu_ms_per_turn']:>11.2f} "
            f"{r['memory_kib_per_episode']:>11.0f}"
        )


def _rows(r: dict[str, float]) -> list[tuple[str, str]]:
    return [
        ("episodes/s", f"{r['episodes_per_s']:.0f}  ({r['episodes']:.0f} in {r['wall_s']:.1f}s)"),
        ("env pool CPU per turn (env step, loop, Ray)", f"{r['cpu_ms_per_turn']:.2f} ms"),
        (
            "env step wall p50 / p99 (queueing included)",
            f"{_fmt_ms(r['env_step_ms_p50'])} / {_fmt_ms(r['env_step_ms_p99'])} ms",
        ),
        (
            "turn round trip to the policy p50 / p99",
            f"{_fmt_ms(r['round_trip_ms_p50'])} / {_fmt_ms(r['round_trip_ms_p99'])} ms",
        ),
        ("env pool memory per concurrent episode", f"{r['memory_kib_per_episode']:.0f} KiB"),
        ("episodes answered correctly", f"{r['scored']:.1%}"),
    ]


async def _run(model: str, episodes: int, pools: int) -> dict[str, float]:
    import ray

    from core.records import GroupSpec
    from rollout.envpool import EnvPool

    policy = ray.remote(InstantPolicy).options(max_concurrency=100_000).remote(model)
    env = EnvConfig(group_size=episodes // pools)
    rollout = RolloutConfig(generate_timeout_s=600.0)
    actors = [
        ray.remote(EnvPool)
        .options(max_concurrency=100_000)
        .remote(f"pool-{i}", {"instant": policy}, model, env, rollout)
        for i in range(pools)
    ]
    pids = [(await a.stats.remote()).pid for a in actors]
    baseline = _pss_mib(pids)
    cpu_before = _cpu_s(pids)
    peak = _PeakMemory(pids)
    started = time.perf_counter()
    groups = await asyncio.gather(
        *[
            a.run_group.remote(GroupSpec(f"g{i}", i, episodes // pools))
            for i, a in enumerate(actors)
        ]
    )
    wall = time.perf_counter() - started
    cpu = _cpu_s(pids) - cpu_before
    peak.stop()
    trajectories = [t for g in groups for t in g.trajectories]
    env_steps = [turn.env_s for t in trajectories for turn in t.turns if turn.env_s]
    turns = sum(len(t.turns) for t in trajectories)
    round_trips = [turn.generate_s for t in trajectories for turn in t.turns]
    scored = sum(t.reward >= 1.0 for t in trajectories) / len(trajectories)
    for actor in [*actors, policy]:
        ray.kill(actor)
    return {
        "episodes": float(len(trajectories)),
        "wall_s": wall,
        "episodes_per_s": len(trajectories) / wall,
        "turns": float(turns),
        "cpu_s": cpu,
        "cpu_ms_per_turn": cpu / turns * 1000,
        "env_step_ms_p50": _ms(env_steps, 50),
        "env_step_ms_p99": _ms(env_steps, 99),
        "round_trip_ms_p50": _ms(round_trips, 50),
        "round_trip_ms_p99": _ms(round_trips, 99),
        "memory_baseline_mib": baseline,
        "memory_peak_mib": peak.peak,
        "memory_kib_per_episode": (peak.peak - baseline) / len(trajectories) * 1024,
        "scored": scored,
    }


def _ms(values: list[float], percentile: int) -> float:
    """The percentile in milliseconds (nan without values)."""
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[percentile - 1] * 1000


def _fmt_ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _pss_mib(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss / MIB
        except psutil.Error:
            continue
    return total


class _PeakMemory:
    """The peak PSS of the pools, sampled every 0.2 s until stopped."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.peak = _pss_mib(pids)
        self._sampler = PeriodicSampler(self._take, 0.2)

    def _take(self) -> None:
        self.peak = max(self.peak, _pss_mib(self.pids))

    def stop(self) -> None:
        self._sampler.stop()


def _parse() -> argparse.Namespace:
    args = parser(__doc__)
    args.add_argument("--episodes", type=int, default=10_000)
    args.add_argument("--pools", type=int, default=2)
    args.add_argument("--sweep", default=None, help="comma-separated scales, e.g. 1000,4000,10000")
    return args.parse_args()


if __name__ == "__main__":
    main()
