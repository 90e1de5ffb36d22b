"""Code-v0 and the code-tests reward: hidden tests decide, and cannot be gamed."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import make_env
from envs.code import scripted_episode
from envs.code_tasks import FAMILIES, make_task
from rewards.code import REPORT_MARK, code_tests, extract_code


def _final(code: str) -> list[dict]:
    return [{"role": "assistant", "content": f"Done.\n```python\n{code}\n```"}]


def test_passes_gymnasium_env_checker():
    check_env(make_env("asyncrl/Code-v0"), skip_render_check=True)


def test_every_family_reference_passes_its_hidden_tests():
    rng = np.random.default_rng(0)
    seen = set()
    while len(seen) < len(FAMILIES):
        task = make_task(rng)
        seen.add(task["function"])
        assert code_tests(_final(task["reference"]), task) == {"passed": 1.0, "format": 1.0}


def test_scripted_episode_uses_the_tool_then_scores_full_reward():
    env = make_env("asyncrl/Code-v0")
    messages = scripted_episode(env, seed=5)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert "Error" not in messages[3]["content"]


def test_partial_solutions_get_partial_credit():
    task = {"function": "f", "inputs": [[1], [2], [3], [4]], "expected": [1, 2, 3, 40]}
    assert code_tests(_final("def f(x):\n    return x"), task)["passed"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    "cheat",
    [
        # print a fake report and leave before the harness runs
        f"import json, os\nprint({REPORT_MARK!r} + json.dumps(['1'] * 4))\nos._exit(0)",
        # return something that claims to equal everything
        "class Any:\n    def __eq__(self, other): return True\ndef f(x):\n    return Any()",
        # crash the interpreter
        "import os\nos.kill(os.getpid(), 9)",
    ],
)
def test_cheating_programs_get_nothing(cheat):
    task = {"function": "f", "inputs": [[1], [2], [3], [4]], "expected": [7, 8, 9, 10]}
    assert code_tests(_final(cheat), task)["passed"] == 0.0


def test_no_code_block_scores_zero_format():
    task = make_task(np.random.default_rng(1))
    assert code_tests([{"role": "assistant", "content": "no idea"}], task) == {
        "passed": 0.0,
        "format": 0.0,
    }
    assert extract_code("```py\nx = 1\n```\nand\n```python\ny = 2\n```") == "y = 2\n"


def test_python_tool_reports_the_models_crash_without_failing_the_episode():
    env = make_env("asyncrl/Code-v0")
    env.reset(seed=0)
    call = '<tool_call>\n{"name": "python", "arguments": {"code": "1/0"}}\n</tool_call>'
    observation, _, terminated, _, info = env.step(call)
    assert not terminated and info["failure"] is None
    assert "ZeroDivisionError" in observation[0]["content"]
    bad = '<tool_call>\n{"name": "python", "arguments": {"source": "1"}}\n</tool_call>'
    observation, *_ = env.step(bad)
    assert "Error:" in observation[0]["content"] and env.stats.tool_errors == 1
