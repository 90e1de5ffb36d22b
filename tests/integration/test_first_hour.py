"""A new user's first hour (issue 19), as they would live it: their own
single-turn env module and their own checkpoint (no chat template, 128
positions), through `python -m rollout.launch`. Each mistake is one line and exit
code 2 within seconds, before any actor starts; after the fixes the run trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import TEST_OVERRIDES
from tests.unit.test_preflight import bare_checkpoint

ROOT = Path(__file__).resolve().parents[2]
PREFLIGHT_S = 60.0
"""A refused run must end within this (it takes ~10 s alone; the budget is for a busy machine)."""

USER_ENV = '''
"""A single-turn addition quiz, written the way a user would."""
import random

import gymnasium as gym


class AddEnv(gym.Env):
    def __init__(self, max_operand: int = 9, crash: bool = False):
        self.max_operand, self.crash = max_operand, crash

    def reset(self, *, seed=None, options=None):
        if self.crash:
            raise KeyError("question bank not found")
        rng = random.Random(seed)
        self.a, self.b = rng.randint(1, self.max_operand), rng.randint(1, self.max_operand)
        return [{"role": "user", "content": f"What is {self.a} + {self.b}?"}], {}

    def step(self, action):
        reward = 1.0 if str(self.a + self.b) in action else 0.0
        return [], reward, True, False, {}
'''


@pytest.fixture(scope="module")
def user_files(tmp_path_factory, tiny_policy) -> tuple[Path, Path]:
    home = tmp_path_factory.mktemp("user")
    (home / "user_env.py").write_text(USER_ENV)
    return home, bare_checkpoint(Path(tiny_policy), home / "my-checkpoint", positions=128)


def launch(home: Path, *overrides: str, run_dir: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "rollout.launch", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(home)},
    )
    return result, time.monotonic() - started


def refused(home: Path, run_dir: Path, *overrides: str) -> str:
    """The one line a refused run prints; checks it stopped in time and before any actor."""
    result, seconds = launch(home, *overrides, run_dir=run_dir)
    assert result.returncode == 2, result.stderr[-3000:]
    assert seconds < PREFLIGHT_S
    assert "pid=" not in result.stderr  # Ray prefixes every actor's line with its pid
    assert not (run_dir / "metrics.jsonl").exists()
    return result.stderr.strip().splitlines()[-1]


def test_own_env_and_checkpoint_from_first_error_to_training(user_files, tmp_path):
    home, checkpoint = user_files
    mine = ["env.id=user_env:AddEnv", f"model.path={checkpoint}", *TEST_OVERRIDES]

    # the env's own kwargs, any name: a wrong one is the env's to refuse
    line = refused(home, tmp_path / "a", *mine, "env.kwargs.max_operandz=49")
    assert line.startswith("asyncrl: config error: environment 'user_env:AddEnv' rejects")
    assert "max_operandz" in line

    # the checkpoint has no chat template; the line says how to add one
    line = refused(home, tmp_path / "b", *mine, "env.kwargs.max_operand=49")
    assert "no chat template" in line and "model.chat_template=qwen" in line

    # a context length above the model's 128 positions
    fixed = [*mine, "env.kwargs={max_operand: 49}", "model.chat_template=qwen"]
    line = refused(home, tmp_path / "c", *fixed, "rollout.max_model_len=1024")
    assert "rollout.max_model_len=1024 is above the model's own context length (128" in line

    # an env that fails on every episode: its own traceback, then the one line
    result, _ = launch(home, *fixed, "env.kwargs.crash=true", run_dir=tmp_path / "d")
    assert result.returncode == 2
    assert 'user_env.py", line' in result.stderr and "question bank not found" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("asyncrl: config error: user_env")

    # fixed: it trains, on the checkpoint's own 128-token context
    run_dir = tmp_path / "run"
    result, _ = launch(home, *fixed, "trainer.total_steps=2", run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["trainer/version"] for row in rows] == [1, 2]
    assert "(context 128 tokens)" in result.stdout + result.stderr
    assert (run_dir / "final_model" / "chat_template.jinja").exists()


def test_a_wait_that_runs_out_ends_the_run_in_one_line(user_files, tmp_path):
    """A machine too slow for a start-up wait: the run ends with one line naming the
    wait and what to raise (exit 4), the traceback kept in the run directory."""
    home, checkpoint = user_files
    run_dir = tmp_path / "slow"
    mine = ["env.id=user_env:AddEnv", f"model.path={checkpoint}", *TEST_OVERRIDES]
    fixed = [*mine, "env.kwargs={max_operand: 49}", "model.chat_template=qwen"]
    result, _ = launch(home, *fixed, "rollout.startup_timeout_s=0.01", run_dir=run_dir)
    assert result.returncode == 4, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("asyncrl: timed out after 0s waiting for 1 vLLM rollout worker(s)")
    assert "*_timeout_s" in line and "timeout.txt" in line
    assert "core.waits.WaitTimeout" not in result.stderr  # no driver traceback on the console
    assert "core.waits.WaitTimeout: timed out" in (run_dir / "timeout.txt").read_text()
