"""A short chaos run through the real entry point: env pools and the learner rank
are killed while training; the run finishes every step, loses nothing, trains
nothing twice and exits 0. (Rollout-worker kills are left to `make chaos`: one
vLLM replacement takes ~85 s on 2 cores, too long for this tier.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import TEST_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]


def test_short_chaos_run_recovers_and_loses_nothing(tiny_policy, tmp_path):
    command = [
        sys.executable,
        "-m",
        "bench.chaos",
        "--seed=0",
        "--kills=3",
        "--targets=pool,learner",
        "--min-interval=2",
        "--max-interval=4",
        *TEST_OVERRIDES,
        "trainer.total_steps=60",  # 40 ended before a third kill (v39) could recover on a fast host
        f"logger.run_dir={tmp_path}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    report = json.loads((tmp_path / "chaos.json").read_text())
    assert done.returncode == 0, (report["problems"], done.stdout[-3000:])
    assert report["steps"] == {"done": 60, "total": 60}
    assert len(report["kills"]) == 3 and {k["kind"] for k in report["kills"]} == {"pool", "learner"}
    assert all(k["recovered_after_s"] is not None for k in report["kills"])
    ledger = report["ledger"]
    assert ledger["balanced"] and ledger["unaccounted"] == 0 and ledger["overdue"] == 0
    assert ledger["trained_beyond_reuse_limit"] == 0
