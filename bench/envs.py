"""Environment-plane benchmark: many concurrent episodes, env and loop overhead
only (not a test).

    python -m bench.envs [--episodes 10000] [--pools 2]

`--episodes` calculator episodes run at once across `--pools` EnvPool actors,
through the real agent loop and router, against a policy actor that answers
instantly and correctly (it reads the question and the tool's result from the
prompt: a tool call, then the answer), so what is measured is the environment
and loop overhead, Ray calls included. Printed: episodes/s, the env pools' CPU
time per turn, p50/p99 wall time of an env step and of a turn's round trip to
the policy (with thousands of episodes per event loop these include queueing),
the peak memory of the env pools per concurrent episode, and the share of
episodes that scored.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import threading
import time
from pathlib import Path

import psutil

from core.config import Config, EnvConfig, RolloutConfig, TinyModelConfig
from orchestrator.bootstrap import ensure_tiny_policy
from orchestrator.system import start_ray
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
    model = ensure_tiny_policy(
        TinyModelConfig(), Path("~/.cache/asyncrl/models").expanduser(), "tiny-qwen3"
    )
    start_ray(Config())
    result = asyncio.run(_run(model, args.episodes, args.pools))
    print(f"\nenv benchmark: {args.episodes} concurrent episodes over {args.pools} env pools")
    for name, value in result:
        print(f"  {name:<44} {value}")


async def _run(model: str, episodes: int, pools: int) -> list[tuple[str, str]]:
    import ray

    from rollout.envpool import EnvPool, GroupSpec

    policy = ray.remote(InstantPolicy).options(max_concurrency=100_000).remote(model)
    env = EnvConfig(group_size=episodes // pools)
    rollout = RolloutConfig(generate_timeout_s=600.0)
    actors = [
        ray.remote(EnvPool)
        .options(max_concurrency=100_000)
        .remote(f"pool-{i}", {"instant": policy}, model, env, rollout)
        for i in range(pools)
    ]
    pids = [(await a.stats.remote())["pid"] for a in actors]
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
    return [
        ("episodes/s", f"{len(trajectories) / wall:.0f}  ({len(trajectories)} in {wall:.1f}s)"),
        ("env pool CPU per turn (env step, loop, Ray)", f"{cpu / turns * 1000:.2f} ms"),
        (
            "env step wall p50 / p99 (queueing included)",
            f"{_ms(env_steps, 50)} / {_ms(env_steps, 99)} ms",
        ),
        (
            "turn round trip to the policy p50 / p99",
            f"{_ms(round_trips, 50)} / {_ms(round_trips, 99)} ms",
        ),
        (
            "env pool memory per concurrent episode",
            f"{(peak.peak - baseline) / len(trajectories) * 1024:.0f} KiB",
        ),
        ("episodes answered correctly", f"{scored:.1%}"),
    ]


def _ms(values: list[float], percentile: int) -> str:
    if not values:
        return "n/a"
    cut = statistics.quantiles(values, n=100, method="inclusive")[percentile - 1]
    return f"{cut * 1000:.1f}"


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
    """Samples the pools' PSS every 0.2 s in a thread and keeps the peak."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.peak = _pss_mib(pids)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stopping.wait(0.2):
            self.peak = max(self.peak, _pss_mib(self.pids))

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--pools", type=int, default=2)
    return parser.parse_args()


if __name__ == "__main__":
    main()
