"""How much memory a run uses: the driver and every process it started.

A local Ray cluster, its actors and their vLLM engine processes all descend
from the driver, so the process tree is the run. PSS (proportional set size)
counts shared pages once, so shared libraries and shared memory are not
counted once per process.
"""

from __future__ import annotations

from typing import Any

import psutil

GIB = float(1 << 30)


def tree_memory(root_pid: int | None = None) -> list[tuple[psutil.Process, Any]]:
    """(process, its psutil memory_full_info) for `root_pid` (this process by
    default) and every descendant still there to be read."""
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    found = []
    for process in processes:
        try:
            found.append((process, process.memory_full_info()))
        except psutil.Error:
            continue
    return found


def tree_memory_gib() -> float:
    """PSS of this process's whole tree (the run), in GiB."""
    return sum(info.pss for _, info in tree_memory()) / GIB
