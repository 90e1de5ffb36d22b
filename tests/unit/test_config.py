"""Every config file composes against the schema; bad keys and values fail clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from core.config import Config, ConfigError, register_configs, validate

CONF = Path(__file__).resolve().parents[2] / "conf"


def _compose(overrides):
    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        raw = compose("config", overrides=overrides, return_hydra_config=True)
        with open_dict(raw):
            raw.logger.run_dir = "/tmp/x"
            del raw["hydra"]
        return OmegaConf.to_object(raw)


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [
        f"{group}={name}"
        for group in ("model", "rollout", "learner", "env", "algo", "buffer", "logger")
        for name in _options(group)
    ]
    + [f"+experiment={name}" for name in _options("experiment")],
)
def test_every_config_file_composes(override):
    cfg = _compose([override])
    assert isinstance(cfg, Config)
    validate(cfg)


def test_bad_value_is_a_config_error():
    cfg = _compose(["rollout.lock=sometimes"])
    with pytest.raises(ConfigError, match="rollout.lock"):
        validate(cfg)


@pytest.mark.parametrize(
    "override, needle",
    [("trainer.totl_steps=3", "totl_steps"), ("rollout.lock=maybe", "rollout.lock")],
)
def test_launch_reports_bad_config_in_one_line(override, needle):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rollout.launch",
            override,
            "hydra.run.dir=/tmp/asyncrl-config-test",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=CONF.parent,
    )
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
