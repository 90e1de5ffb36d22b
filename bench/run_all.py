"""`make bench`: every benchmark in bench/, one after the other, then the report.

    python -m bench.run_all [--only NAME,...] [--fresh] [--report-only]

Each benchmark runs as its own subprocess (its own Ray cluster and vLLM
engines, torn down when it exits) with the settings in BENCHES, chosen so the
whole suite takes about 85 minutes on a 2-core CPU machine (the larger TRL
peer case about 40 of them, the tiny one's three seeds about 15). Its output goes to
the console and to bench/results/<name>.log, its numbers to
bench/results/<name>.json (bench.record). A benchmark that fails or runs past
its time limit is marked failed (its process tree is stopped) and the others
still run; the report is written either way and the exit code is 1 if any
failed.

Resumable: a benchmark whose JSON already exists for the same settings and git
commit (with no uncommitted changes then or now) is not run again (`--fresh`
reruns everything, `--only` picks some).
bench.report writes bench/RESULTS.md and bench/plots/*.png from whatever JSON
there is; `--report-only` just does that.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

from bench.preamble import parser
from bench.record import ROOT, git_commit, read_json
from bench.report import RESULTS_DIR, write_report


@dataclass(frozen=True)
class Bench:
    name: str
    args: tuple[str, ...]
    timeout_s: int
    estimate_s: int
    """Roughly how long it takes on a 2-core CPU machine (for the plan printed first)."""
    module: str = ""
    """bench.<module> to run, when not bench.<name>."""


BENCHES = (
    # three tiny-Qwen3 sizes (4 / 43 / 390 MB), 1 warm-up + 3 measured updates each
    Bench("weight_sync", ("--updates", "3"), 900, 180),
    # the same three sizes on a two-node Ray cluster: a worker on the writer's node (shm)
    # and one on the other (object store), 1 warm-up + 3 measured updates each
    Bench("cross_node_sync", ("--updates", "3"), 900, 240),
    # 1k, 4k and 10k concurrent episodes over 2 env pools against an instant policy
    Bench("envs", ("--sweep", "1000,4000,10000", "--pools", "2"), 900, 150),
    # fp32 / bf16 / fp8, a fresh 1-rank DeepSpeed learner each, 1 warm-up + 4 timed steps
    Bench("learner", ("--steps", "4"), 900, 240),
    # agent loop vs raw vLLM (32 episodes), ngram speculation on/off, router vs round robin
    Bench("rollout", ("--episodes", "32"), 1200, 360),
    # the default workload, one rollout worker (rollout and learner on disjoint cores),
    # 30 steps in sync mode then in async mode; the calculator
    # answers in 0.5 s, 10% of its calls in 4 s (stragglers)
    Bench(
        "async_vs_sync",
        ("--steps", "30", "--tool-latency", "0.5", "--slow-rate", "0.1", "--slow-latency", "4"),
        1500,
        420,
    ),
    # TRL's GRPOTrainer vs asyncrl sync and async, 60 steps each, three seeds side by side
    # (one run's reward moves ~0.02 from seed to seed, as much as the sides differ;
    # needs the peer extra)
    Bench("peer", ("--case", "tiny", "--modes", "sync,async", "--seeds", "3"), 3600, 1200),
    # the same at ~30M parameters and up to 256 new tokens, 4 steps a side
    Bench("peer_larger", ("--case", "larger"), 4200, 2400, module="peer"),
    # the default calculator task multi-turn, its tool answering in 0.5 s: TRL's own tool
    # loop (GRPOTrainer(tools=...)) vs asyncrl sync and async, 10 steps a side
    Bench("peer_agentic", ("--case", "agentic"), 1800, 600, module="peer"),
    # a 10-step default run (`make run`, shortened), process tree sampled every 0.5 s
    Bench("memory", ("--steps", "10"), 900, 120),
)
RUNS = "runs.json"


def main() -> None:
    args = _parse()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    runs = read_json(RESULTS_DIR / RUNS) or {}
    if not args.report_only:
        chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
        unknown = set(args.only.split(",")) - {b.name for b in BENCHES} if args.only else set()
        if unknown:
            raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        commit, dirty = git_commit()
        todo = [b for b in chosen if args.fresh or dirty or not _done(b, commit)]
        plan = ", ".join(f"{b.name} (~{b.estimate_s // 60} min)" for b in todo) or "nothing"
        print(
            f"bench: running {plan}; already done: "
            f"{', '.join(b.name for b in chosen if b not in todo) or 'none'}",
            flush=True,
        )
        for bench in chosen:
            if bench in todo:
                runs[bench.name] = run_one(bench)
                (RESULTS_DIR / RUNS).write_text(json.dumps(runs, indent=2) + "\n")
            else:
                runs.setdefault(bench.name, {})["status"] = "ok"
    failed = write_report(runs, [b.name for b in BENCHES])
    print(f"bench: wrote {(RESULTS_DIR.parent / 'RESULTS.md').relative_to(ROOT)}", flush=True)
    if failed:
        print(f"bench: failed: {', '.join(failed)} (logs in bench/results/)", flush=True)
        raise SystemExit(1)


def _done(bench: Bench, commit: str) -> bool:
    record = read_json(RESULTS_DIR / f"{bench.name}.json")
    return bool(
        record
        and record.get("argv") == list(bench.args)
        and record.get("commit") == commit
        and not record.get("dirty")
    )


def run_one(bench: Bench) -> dict[str, Any]:
    """Run one benchmark to its JSON; returns how it went."""
    out = RESULTS_DIR / f"{bench.name}.json"
    log = RESULTS_DIR / f"{bench.name}.log"
    out.unlink(missing_ok=True)  # never report an older run as this one
    module = bench.module or bench.name
    command = [sys.executable, "-m", f"bench.{module}", *bench.args, "--json", str(out)]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_SILENT": "true",
        "TOKENIZERS_PARALLELISM": "false",
    }
    print(f"\n=== bench.{bench.name} {' '.join(bench.args)}  (log: {log})", flush=True)
    started = time.perf_counter()
    with open(log, "w") as handle:
        child = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: stoppable as a whole
        )
        tee = threading.Thread(target=_tee, args=(child, handle), daemon=True)
        tee.start()
        try:
            code: int | None = child.wait(timeout=bench.timeout_s)
        except subprocess.TimeoutExpired:
            code = None
            _stop_tree(child)
        tee.join(timeout=30)
    seconds = time.perf_counter() - started
    if code is None:
        status = f"failed: no result within {bench.timeout_s}s (stopped)"
    elif code != 0:
        status = f"failed: exit code {code}"
    elif read_json(out) is None:
        status = "failed: exited 0 but wrote no results"
    else:
        status = "ok"
    print(f"=== bench.{bench.name}: {status} ({seconds:.0f}s)", flush=True)
    return {
        "status": status,
        "seconds": seconds,
        "command": " ".join(["python", *command[1:-2]]),
        "log": str(log.relative_to(ROOT)),
    }


def _tee(child: subprocess.Popen, handle: Any) -> None:
    assert child.stdout is not None
    for line in child.stdout:
        handle.write(line)
        handle.flush()
        sys.stdout.write(line)
        sys.stdout.flush()


def _stop_tree(child: subprocess.Popen) -> None:
    """SIGTERM then SIGKILL to the benchmark and every process it started (Ray and
    vLLM processes included, wherever they moved in the process group)."""
    try:
        tree = [psutil.Process(child.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.Error:
        tree = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)  # the child is not reaped yet: its group id is its own
        except (ProcessLookupError, PermissionError):
            pass
        for process in tree:
            try:
                process.send_signal(sig)  # psutil refuses a pid that was reused meanwhile
            except psutil.Error:
                pass
        if sig == signal.SIGTERM:
            _, tree = psutil.wait_procs(tree, timeout=15)
    child.wait()


def _parse() -> argparse.Namespace:
    args = parser(__doc__, json=False)
    args.add_argument("--only", default="", help="comma-separated benchmark names")
    args.add_argument("--fresh", action="store_true", help="rerun even what is already done")
    args.add_argument(
        "--report-only", action="store_true", help="only rewrite RESULTS.md and the plots"
    )
    return args.parse_args()


if __name__ == "__main__":
    main()
