"""How much memory a run uses: the driver and every process it started.

A local Ray cluster, its actors and their vLLM engine processes all descend
from the driver, so the process tree is the run. PSS (proportional set size)
counts shared pages once, so shared libraries and shared memory are not
counted once per process.
"""

from __future__ import annotations

import psutil

GIB = float(1 << 30)


def tree_memory_gib() -> float:
    root = psutil.Process()
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total / GIB
