"""The real program, as a user runs it, with a tiny budget (cleanrl-style smoke test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import TEST_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]


def test_launch_trains_and_writes_its_outputs(tmp_path, tiny_policy):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rollout.launch",
            "+experiment=agentic_grpo",
            "trainer.total_steps=3",
            "logger.plot_every=1",
            f"hydra.run.dir={run_dir}",
            *TEST_OVERRIDES,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2]
    assert [row["trainer/version"] for row in rows] == [1, 2, 3]
    for key in ("rollout/reward_mean", "learner/loss", "learner/kl_behavior", "sync/export_s"):
        assert all(key in row for row in rows), key
    # a version's publish overlaps the next step, and is logged with it
    assert all(row["sync/pause_s"] >= 0 for row in rows[1:])
    assert (run_dir / "reward_curve.png").stat().st_size > 10_000
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (run_dir / "final_model" / "config.json").exists()
