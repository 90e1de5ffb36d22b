"""End-to-end memory benchmark: the peak memory of a default short training run,
measured from outside it (not a test).

    python -m bench.memory [--steps 10] [--interval 0.5] [--json PATH] [override ...]

Runs `python -m rollout.launch +experiment=agentic_grpo trainer.total_steps=N`
(the default job, shortened; `override ...` are passed on) as a child process
and samples its whole process tree every `--interval` seconds: the driver, the
local Ray cluster (GCS, raylet, ...), every actor (rollout workers, learner
rank, env pools) and the vLLM engine processes, all descendants of the driver.
PSS (proportional set size) counts shared pages once; the RSS sum, which counts
them once per process, is given for the record. Printed: the peak (and at which
time), the run's own per-step figure (`peak_memory_gib` in its summary.json),
and the peak broken down by process (Ray names actor processes `ray::Class`).
`--json PATH` also writes these and the sampled curve (bench.record).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

from bench.preamble import parser
from bench.record import write_json
from bench.sampling import PeriodicSampler
from orchestrator.resources import GIB, tree_memory

RUN_DIR = Path("runs/bench-memory")
SUMMARY_READ = ("peak_memory_gib", "process_s")
"""What this bench reads from the run's summary.json (tests/integration/test_launch.py
checks a real run writes them)."""


def main() -> None:
    args = _parse()
    command = [
        sys.executable,
        "-m",
        "rollout.launch",
        "+experiment=agentic_grpo",
        f"trainer.total_steps={args.steps}",
        f"hydra.run.dir={RUN_DIR}",
        "logger.progress=false",
        *args.overrides,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    shutil.rmtree(RUN_DIR, ignore_errors=True)  # this benchmark's own run directory
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env)
    sampler = _TreeSamples(child.pid, args.interval)
    try:
        code = child.wait()
    finally:
        sampler.stop()
        if child.poll() is None:
            child.kill()
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"the training run failed (exit code {code}); see its output above")
    if not sampler.samples:
        raise SystemExit("no memory sample was taken: the run ended before the first one")
    summary = json.loads((RUN_DIR / "summary.json").read_text())
    peak = max(sampler.samples, key=lambda s: s["pss_gib"])
    print(f"\nend-to-end memory: {args.steps}-step default run ({wall:.0f}s with start-up)")
    print(f"  peak PSS of the process tree   {peak['pss_gib']:.2f} GiB at {peak['t_s']:.0f}s")
    print(f"  RSS sum at that moment         {peak['rss_gib']:.2f} GiB (shared pages counted")
    print("                                 once per process)")
    print(f"  the run's own per-step peak    {summary['peak_memory_gib']:.2f} GiB")
    print(f"  processes at the peak          {peak['processes']}")
    for name, gib in sorted(peak["by_process"].items(), key=lambda kv: -kv[1]):
        print(f"    {name:<30} {gib:6.2f} GiB")
    write_json(
        args.json,
        "memory",
        {
            "steps": args.steps,
            "command": command[1:],
            "wall_s": wall,
            "peak_pss_gib": peak["pss_gib"],
            "peak_rss_sum_gib": peak["rss_gib"],
            "peak_t_s": peak["t_s"],
            "processes_at_peak": peak["processes"],
            "by_process_gib": peak["by_process"],
            "run_peak_memory_gib": summary["peak_memory_gib"],
            "run_process_s": summary["process_s"],
            "curve_t_s": [s["t_s"] for s in sampler.samples],
            "curve_pss_gib": [s["pss_gib"] for s in sampler.samples],
        },
    )


def tree_sample(root_pid: int) -> dict[str, Any] | None:
    """PSS and RSS of `root_pid` and all its descendants, by process name."""
    tree = tree_memory(root_pid)
    if not tree:
        return None
    by_process: dict[str, float] = defaultdict(float)
    for process, info in tree:
        try:
            by_process[_name(process)] += info.pss / GIB
        except psutil.Error:
            continue
    return {
        "pss_gib": sum(info.pss for _, info in tree) / GIB,
        "rss_gib": sum(info.rss for _, info in tree) / GIB,
        "processes": len(tree),
        "by_process": dict(by_process),
    }


def _name(process: psutil.Process) -> str:
    """`ray::RolloutWorker` for an actor (Ray puts the running method after a dot),
    `VLLM::EngineCore`, `raylet`, `python` for the driver, ..."""
    cmdline = process.cmdline()
    title = cmdline[0] if cmdline else process.name()
    title = title.split()[0] if title.split() else process.name()
    if title.startswith("ray::"):
        return title.split(".")[0]
    return Path(title).name


class _TreeSamples:
    """The samples of one process tree, taken every `interval` seconds until stopped."""

    def __init__(self, pid: int, interval: float):
        self.pid = pid
        self.samples: list[dict[str, Any]] = []
        self._started = time.perf_counter()
        self._sampler = PeriodicSampler(self._take, interval)

    def _take(self) -> None:
        sample = tree_sample(self.pid)
        if sample is not None:
            sample["t_s"] = time.perf_counter() - self._started
            self.samples.append(sample)

    def stop(self) -> None:
        self._sampler.stop()


def _parse() -> argparse.Namespace:
    args = parser(__doc__)
    args.add_argument("--steps", type=int, default=10)
    args.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    args.add_argument("overrides", nargs="*", help="more config overrides for the run")
    return args.parse_args()


if __name__ == "__main__":
    main()
