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


def test_killed_driver_resumes_from_its_last_checkpoint(tmp_path, tiny_policy):
    """SIGKILL the whole run (driver, Ray, engines) right after its first
    checkpoint; `trainer.resume=true` on the same run directory continues at the
    checkpoint's step and version."""
    import os
    import signal
    import time

    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "rollout.launch",
        "+experiment=agentic_grpo",
        "trainer.total_steps=4",
        "trainer.checkpoint_every=2",
        f"hydra.run.dir={run_dir}",
        *TEST_OVERRIDES,
    ]
    first = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + 400
    while not latest.exists() and first.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    assert latest.read_text() == "step-2"

    second = subprocess.run(
        [*command, "trainer.resume=true"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumed = [row for row in rows if row["step"] >= 2][-2:]
    assert [row["step"] for row in resumed] == [2, 3]
    assert [row["trainer/version"] for row in resumed] == [3, 4]
    assert resumed[-1]["ledger/balanced"] == 1.0
