"""Every registered environment, built-in or plugin, passes gymnasium's env checker
and survives random model output; every env config group composes and builds."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs import load_plugins, make_env
from tests.fuzz import fuzz_examples

_before_plugins = set(gym.registry)
load_plugins()
REGISTERED = sorted(
    env_id
    for env_id in gym.registry
    if env_id.startswith("asyncrl/") or env_id not in _before_plugins
)
"""The built-ins and whatever installed plugins registered."""
ENV_CONFIGS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "env").glob("*.yaml"))


def test_the_registry_holds_every_builtin():
    assert {"asyncrl/Calculator-v0", "asyncrl/Code-v0", "asyncrl/Search-v0"} <= set(REGISTERED)


@pytest.mark.parametrize("env_id", REGISTERED)
def test_check_env(env_id):
    check_env(make_env(env_id), skip_render_check=True)


@pytest.mark.parametrize("name", ENV_CONFIGS)
def test_env_config_group_builds_its_env(name):
    from core.compose import compose

    cfg = compose([f"env={name}"])
    env = make_env(cfg.env.id, cfg.env.kwargs)
    observation, _ = env.reset(seed=0)
    assert env.observation_space.contains(observation)


MODEL_OUTPUT = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(["<tool_call>", "</tool_call>", "<answer>", "</answer>", "```python\n"]),
        st.sampled_from(['{"name": "calculator", "arguments": {"expression": "1+"}}', "up"]),
    ),
    max_size=12,
).map("".join)


@pytest.mark.parametrize("env_id", ["asyncrl/Calculator-v0", "asyncrl/Maze-v0"])
@settings(
    max_examples=fuzz_examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(turns=st.lists(MODEL_OUTPUT, min_size=1, max_size=4))
def test_random_model_output_never_breaks_the_step_path(env_id, turns):
    env = make_env(env_id)
    env.reset(seed=0)
    for text in turns:
        observation, reward, terminated, truncated, info = env.step(text)
        assert env.observation_space.contains(observation) or observation == ()
        assert isinstance(reward, float) and info.get("failure") is None
        if terminated or truncated:
            break
