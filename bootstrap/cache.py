"""A cache entry built once, whole: the lock, the staging directory, the READY mark.

Knows nothing of what is built: the caller passes a function that fills a
directory (the tiny policy, a chat-template overlay, a benchmark's model).
"""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Callable
from pathlib import Path


def cached_build(target: Path, build: Callable[[Path], None]) -> str:
    """`target`, built once by `build(staging_dir)` and moved into place whole.

    Builders of the same target wait for each other on a lock file beside it; a
    build that died half-way (no READY marker) is thrown away and redone.
    """
    ready = target / "READY"
    if ready.exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same model
        if not ready.exists():
            staging = target.with_name(target.name + ".partial")
            for leftover in (staging, target):
                shutil.rmtree(leftover, ignore_errors=True)
            staging.mkdir()
            build(staging)
            staging.rename(target)
            ready.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    return str(target)
