"""A learner rank starts whatever a killed rank left behind on the machine.

DeepSpeed on CPU used to JIT-build a communication op at every rank start, inside
a lock file that a killed rank never removes; with the file left behind, every
later start on the machine waited on it forever (a CI run lost 80 minutes to it).
Here a stale lock is planted where that build would take it, and a rank, in its
own process as under Ray, must still start within a bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

START_BOUND_S = 240
"""A rank starts in ~20 s here; the bound leaves room for a loaded machine."""

START_ONE_RANK = """
import socket, sys
from core.config import Config
from learner.worker import LearnerWorker

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
cfg = Config()
worker = LearnerWorker(sys.argv[1], cfg.learner, cfg.algo, 1.0, 0, 1, 0)
worker.start("127.0.0.1", port)  # a lone rank outside Ray meets itself
print("started rank", worker.ready(), "at version", worker.health()["version"])
"""


def test_rank_starts_beside_a_stale_build_lock(tiny_policy, tmp_path):
    extensions = tmp_path / "torch_extensions"
    (extensions / "deepspeed_shm_comm").mkdir(parents=True)
    (extensions / "deepspeed_shm_comm" / "lock").touch()
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions), "DS_ACCELERATOR": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", START_ONE_RANK, tiny_policy],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_BOUND_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "started rank 0 at version 0" in done.stdout
