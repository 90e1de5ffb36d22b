"""Learner benchmark: training tokens/s in fp32, bf16 and fp8, side by side in one
run (not a test).

    python -m bench.learner [--steps 4] [--model PATH] [--json PATH]

Each precision gets a fresh 1-rank DeepSpeed learner (a Ray actor, the real
path) on the same synthetic batches: one warm-up step, then `--steps` timed
steps. Printed: tokens/s per precision and the ratio to fp32. On a CPU the
fp8 figure is for the record (float8 matmuls are emulated); its speed-up needs
a GPU with FP8 tensor cores, where the same command reports fp8/bf16.
`--json PATH` also writes the rates (bench.record).
"""

from __future__ import annotations

import argparse
import asyncio
import random

from bench.preamble import environment, parser, policy
from bench.record import write_json
from core.config import Config
from core.types import Batch, Group, Trajectory
from orchestrator.actors import start_ray
from orchestrator.learners import LearnerGroup

PRECISIONS = ("fp32", "bf16", "fp8")


def main() -> None:
    args = _parse()
    environment()
    model = policy(args.model)
    cfg = Config()
    start_ray(cfg)
    rates = {p: asyncio.run(_tokens_per_s(cfg, model, p, args.steps)) for p in PRECISIONS}
    print(f"\nlearner benchmark ({model}, {args.steps} timed steps each)")
    for precision, rate in rates.items():
        print(f"  {precision:<5} {rate:8.0f} tokens/s   {rate / rates['fp32']:.2f}x fp32")
    print(f"  fp8 / bf16: {rates['fp8'] / rates['bf16']:.2f}x")
    write_json(
        args.json,
        "learner",
        {
            "model": model,
            "steps": args.steps,
            "tokens_per_s": rates,
            "over_fp32": {p: rate / rates["fp32"] for p, rate in rates.items()},
            "fp8_over_bf16": rates["fp8"] / rates["bf16"],
        },
    )


async def _tokens_per_s(cfg: Config, model: str, precision: str, steps: int) -> float:
    cfg.learner.precision = precision
    group = await LearnerGroup.start(cfg, model)
    try:
        await group.train_step(_batch(0))  # warm-up: allocations, first-call paths
        tokens = seconds = 0.0
        for step in range(1, steps + 1):
            metrics = await group.train_step(_batch(step))
            tokens += metrics["learner/tokens"]
            seconds += metrics["perf/learner_step_s"]
        return tokens / seconds
    finally:
        group.kill()


def _batch(seed: int, groups: int = 8, size: int = 4) -> Batch:
    """Agentic-length samples: a 150-token prompt and 100 generated tokens each."""
    rng = random.Random(seed)
    out = []
    for g in range(groups):
        trajectories = []
        for i in range(size):
            prompt = [rng.randrange(5, 500) for _ in range(150)]
            generated = [rng.randrange(5, 500) for _ in range(100)]
            t = Trajectory(f"{g}/{i}", str(g), "bench", g, len(prompt))
            t.append(prompt, generated=False)
            t.append(generated, True, [-3.0] * len(generated), [0] * len(generated))
            t.reward = float(rng.random() < 0.5)
            trajectories.append(t)
        out.append(Group(str(g), "bench", g, trajectories))
    return Batch(out, 0)


def _parse() -> argparse.Namespace:
    args = parser(__doc__, model=True)
    args.add_argument("--steps", type=int, default=4)
    return args.parse_args()


if __name__ == "__main__":
    main()
