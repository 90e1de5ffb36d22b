"""Every config file composes against the schema; bad keys and values fail clearly."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from operator import attrgetter

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from core import choices
from core.compose import CONF_DIR as CONF
from core.compose import compose
from core.config import Config, ConfigError, validate
from orchestrator.cli import check_overrides

CHOICES = {
    "rollout.lock": choices.RolloutLock,
    "rollout.speculative.method": choices.SpeculativeMethod,
    "rollout.weight_transport": choices.WeightTransport,
    "trainer.mode": choices.TrainerMode,
    "algo.name": choices.AlgorithmName,
    "algo.off_policy": choices.OffPolicy,
    "algo.loss_agg": choices.LossAggregation,
    "algo.adv_std": choices.AdvantageStd,
    "learner.precision": choices.Precision,
    "learner.lr_schedule": choices.LrSchedule,
    "logger.wandb.mode": choices.WandbMode,
    "placement": choices.PlacementMode,
    "curriculum.weighting": choices.CurriculumWeighting,
    "model.tiny.architecture": choices.TinyArchitecture,
}


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
    assert isinstance(compose([override]), Config)  # and validates


def _choice_fields(schema: type, prefix: str = "") -> dict[str, type]:
    hints = typing.get_type_hints(schema)
    fields: dict[str, type] = {}
    for field in dataclasses.fields(schema):
        kind = next((t for t in typing.get_args(hints[field.name]) if t is not type(None)), None)
        kind = kind or hints[field.name]
        if dataclasses.is_dataclass(kind):
            fields |= _choice_fields(kind, f"{prefix}{field.name}.")
        elif isinstance(kind, type) and issubclass(kind, choices.Choice):
            fields[f"{prefix}{field.name}"] = kind
    return fields


def test_every_choice_field_of_the_schema_is_tested_here():
    assert _choice_fields(Config) == CHOICES


def test_every_choice_is_named_by_its_value():
    """OmegaConf finds a member by its name (omegaconf/nodes.py:487-491)."""
    for choice in choices.Choice.__subclasses__():
        assert [m.name for m in choice] == [m.value for m in choice], choice


@pytest.mark.parametrize("key", CHOICES)
def test_a_value_outside_a_choice_fails_at_compose_with_the_key(key):
    with pytest.raises(ConfigCompositionException, match=key):
        compose([f"{key}=sometimes"])
    problem = check_overrides([f"{key}=sometimes"])
    assert problem is not None and "\n" not in problem
    assert key in problem and all(member.value in problem for member in CHOICES[key])


@pytest.mark.parametrize("key", CHOICES)
def test_every_member_of_a_choice_is_taken_by_its_value(key):
    for member in CHOICES[key]:
        assert attrgetter(key)(compose([f"{key}={member.value}"], checked=False)) is member


def test_compose_takes_hydras_config_dir_and_name_and_runs_the_rules(tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "mine.yaml").write_text("id: mymod:MyEnv\nkwargs:\n  level: 3\n")
    (tmp_path / "mine.yaml").write_text("defaults:\n  - config\n  - override env: mine\n")
    cfg = compose(["trainer.mode=sync"], config_dir=str(tmp_path), config_name="mine")
    assert (cfg.env.id, cfg.env.kwargs, cfg.trainer.mode) == ("mymod:MyEnv", {"level": 3}, "sync")
    assert compose(["logger.run_dir=/tmp/r/${env.group_size}"]).logger.run_dir == "/tmp/r/8"
    with pytest.raises(ConfigError, match="trainer.total_steps must be >= 1"):
        compose(["trainer.total_steps=0"])
    assert compose(["trainer.total_steps=0"], checked=False).trainer.total_steps == 0


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

    cfg = compose(normalize(argv))
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


def test_a_run_writes_the_config_it_used_beside_its_metrics(tmp_path):
    from orchestrator.run import write_config

    cfg = compose(["env=dataset", "eval.every=5", "curriculum.enabled=true", "env.group_size=3"])
    path = write_config(cfg, tmp_path)
    reread = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))
    )
    assert reread == cfg


def test_the_tiny_vision_language_policy_is_dense():
    cfg = compose(["model=tiny_vl"])
    assert (cfg.model.tiny.architecture, cfg.model.tiny.num_experts) == ("idefics3", 0)
    with pytest.raises(ConfigError, match="set model.tiny.num_experts=0"):
        compose(["model=tiny_vl", "model.tiny.num_experts=4"])
