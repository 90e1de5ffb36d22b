"""An env plugin as a user ships it: the example package is pip-installed, found
through its entry point, passes the env checker, and a run trains on it through
the normal launch command with `env=capitals` (its own config group)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import TEST_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "asyncrl-example-env"


@pytest.fixture
def installed_plugin():
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    install = [*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(PLUGIN)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    yield
    subprocess.run([*pip, "uninstall", "-y", "asyncrl-example-env"], capture_output=True)


def _in_fresh_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_installed_plugin_is_found_checked_and_trained_on(installed_plugin, tmp_path, tiny_policy):
    found = _in_fresh_python(
        "from gymnasium.utils.env_checker import check_env\n"
        "from envs import load_plugins, make_env\n"
        "print(load_plugins())\n"
        "check_env(make_env('example/Capitals-v0'), skip_render_check=True)\n"
        "print('checked')\n"
    )
    assert "capitals" in found and "checked" in found

    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rollout.launch",
            "env=capitals",
            "trainer.total_steps=2",
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
    assert [row["trainer/version"] for row in rows] == [1, 2]
    assert all("reward/correct" in row and "learner/loss" in row for row in rows)
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "example/Capitals-v0" in config
