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


def _kwargs(argv: list[str]) -> tuple[str, dict]:
    from orchestrator.cli import normalize

    cfg = _compose(normalize(argv))
    return cfg.env.id, cfg.env.kwargs


@pytest.mark.parametrize(
    "argv, env_id, kwargs",
    [
        # env.id alone: that env's own defaults, not the default group's (the calculator's)
        (["env.id=mymod:MyEnv"], "mymod:MyEnv", {}),
        (["env.id=mymod:MyEnv", "env.kwargs.max_operand=49"], "mymod:MyEnv", {"max_operand": 49}),
        (
            ["env.id=mymod:MyEnv", "env.kwargs={max_operand: 49}"],
            "mymod:MyEnv",
            {"max_operand": 49},
        ),
        (["env.kwargs={}"], "asyncrl/Calculator-v0", {}),
        (["~env.kwargs"], "asyncrl/Calculator-v0", {}),
        (["env.kwargs={max_turns: 5}"], "asyncrl/Calculator-v0", {"max_turns": 5}),
        (
            ["env.kwargs.max_turns=5", "env.kwargs.tool_latency_s=0.5"],
            "asyncrl/Calculator-v0",
            {
                "min_operands": 2,
                "max_operands": 3,
                "max_value": 99,
                "max_turns": 5,
                "tool_latency_s": 0.5,
            },
        ),
        (["env=maze", "env.kwargs.size=7"], "asyncrl/Maze-v0", None),
    ],
)
def test_env_kwargs_forms(argv, env_id, kwargs):
    got_id, got = _kwargs(argv)
    assert got_id == env_id
    if kwargs is None:  # a group's kwargs with one changed
        assert got["size"] == 7 and got["max_turns"] == 40
    else:
        assert got == kwargs


def _launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rollout.launch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=CONF.parent,
    )


def test_hydra_flags_behave_as_in_any_hydra_app(tmp_path):
    shown = _launch("--cfg", "job", "+experiment=agentic_grpo", "env.kwargs.max_turns=5")
    assert shown.returncode == 0, shown.stderr
    job = OmegaConf.create(shown.stdout)
    assert job.trainer.total_steps == 200 and job.env.kwargs.max_turns == 5
    resolved = _launch("--cfg", "job", "--resolve", "logger.run_dir=/tmp/x/${env.group_size}")
    assert "run_dir: /tmp/x/8" in resolved.stdout, resolved.stderr
    assert "env/calculator" in _launch("--info", "defaults").stdout
    extra = tmp_path / "conf"
    (extra / "env").mkdir(parents=True)
    (extra / "env" / "mine.yaml").write_text("id: mymod:MyEnv\nkwargs:\n  level: 3\n")
    (extra / "mine.yaml").write_text("defaults:\n  - config\n  - override env: mine\n  - _self_\n")
    own = _launch("--config-dir", str(extra), "--config-name", "mine", "--cfg", "job")
    env = OmegaConf.create(own.stdout).env
    assert (env.id, env.kwargs) == ("mymod:MyEnv", {"level": 3}), own.stderr


def test_multirun_sweeps_through_hydras_launcher(tmp_path):
    """Each job of the sweep is launched with the rewritten kwargs form; the first
    stops at validation (total_steps=0), before anything starts."""
    result = _launch(
        "-m", "env.kwargs.max_turns=1,2", "trainer.total_steps=0", f"hydra.sweep.dir={tmp_path}"
    )
    assert "Launching 2 jobs locally" in result.stdout, result.stderr
    assert "#0 : ++env.kwargs.max_turns=1 trainer.total_steps=0" in result.stdout
    assert result.returncode == 2 and "trainer.total_steps must be >= 1" in result.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--cfg", "job", "trainer.totl_steps=3"], "totl_steps"),
        (["-m", "rollout.num_workers=1,x"], "rollout.num_workers=x"),
        (["--config-name", "nope"], "Cannot find primary config 'nope'"),
    ],
)
def test_overrides_with_hydra_flags_fail_in_one_line(args, needle):
    result = _launch(*args)
    assert result.returncode == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_group_deadline_must_leave_the_pool_its_episode_timeout():
    cfg = Config()
    cfg.supervisor.group_deadline_s = cfg.env.episode_timeout_s
    with pytest.raises(ConfigError, match="group_deadline_s"):
        validate(cfg)
