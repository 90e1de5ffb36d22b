"""Config loader fuzz: random command-line overrides either load or fail with one
line (ConfigError, EnvConfigError or Hydra's composition error), never a stack
trace. `make fuzz` runs 10x the examples (outside CI)."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.compose import compose
from core.config import Config, ConfigError
from envs import EnvConfigError, make_env
from orchestrator.cli import check_overrides, normalize
from tests.fuzz import fuzz_examples

EXAMPLES = fuzz_examples(150)


def _schema_keys(node: object, prefix: str = "") -> list[str]:
    keys = []
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        dotted = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            keys.extend(_schema_keys(value, dotted + "."))
        else:
            keys.append(dotted)
    return keys


KEYS = _schema_keys(Config()) + ["env.kwargs.max_turns", "env.kwargs.nope", "model.nope", "nope"]
# Any name goes under env.kwargs (they are the env's); the env refuses what it does not take.
VALUES = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["true", "false", "null", "''", "[1,2]", "{a: 1}", "${oops}", "???", "abc"]),
    st.text(alphabet="abcxyz_-/.:0123456789", max_size=12),
)
OVERRIDE = st.builds(lambda key, value: f"{key}={value}", st.sampled_from(KEYS), VALUES)


def load(overrides: list[str]) -> str | None:
    """What `python -m rollout.launch` does before it starts anything: the first
    problem as one line, or None when the config loads."""
    overrides = normalize(overrides)
    if problem := check_overrides(overrides):
        return problem
    try:
        cfg = compose(overrides)
        make_env(cfg.env.id, cfg.env.kwargs)
    except (ConfigError, EnvConfigError) as exc:
        return str(exc)
    return None


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(st.lists(OVERRIDE, min_size=1, max_size=3))
def test_random_overrides_load_or_fail_in_one_line(overrides):
    problem = load(overrides)
    if problem is not None:
        assert problem.strip() and "\n" not in problem.strip() and "Traceback" not in problem
