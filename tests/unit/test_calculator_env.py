"""Calculator-v0 and the ToolEnv protocol: gymnasium compliance, tools, faults, limits."""

from __future__ import annotations

import asyncio

import pytest
from gymnasium.utils.env_checker import check_env

from envs import EnvConfigError, make_env
from envs.base import ToolFault
from envs.calculator import CalculatorEnv, scripted_episode
from envs.tools.calculator import Calculator, ToolArgumentError, evaluate


def test_passes_gymnasium_env_checker():
    check_env(make_env("asyncrl/Calculator-v0"), skip_render_check=True)


def test_same_seed_same_task_and_answer_is_right():
    env = make_env("asyncrl/Calculator-v0")
    _, first = env.reset(seed=7)
    _, again = env.reset(seed=7)
    assert first["task"] == again["task"]
    assert float(first["task"]["answer"]) == eval(first["task"]["expression"])  # noqa: S307


def test_tool_episode_scores_full_reward():
    env = make_env("asyncrl/Calculator-v0")
    messages = scripted_episode(env, seed=3, use_tool=True)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[3]["content"] == env.task["answer"]
    assert env.stats.tool_calls == 1 and env.stats.tool_errors == 0


def test_wrong_answer_keeps_only_the_format_component():
    env = make_env("asyncrl/Calculator-v0")
    env.reset(seed=1)
    _, reward, terminated, truncated, info = env.step("<answer>-123456</answer>")
    assert terminated and not truncated
    assert info["reward_components"] == {"correct": 0.0, "format": 1.0}
    assert reward == pytest.approx(0.1)


@pytest.mark.parametrize(
    "text, kind",
    [
        ("<tool_call>{not json}</tool_call>", "invalid_json"),
        ('<tool_call>{"name": "calculator"', "unclosed"),
        ('<tool_call>{"name": "nope", "arguments": {}}</tool_call>', "unknown_tool"),
        (
            '<tool_call>{"name": "calculator", "arguments": {"expression": "2 +"}}</tool_call>',
            "bad_arguments",
        ),
        ('<tool_call>{"name": "calculator", "arguments": {"x": "1"}}</tool_call>', "bad_arguments"),
    ],
)
def test_malformed_tool_calls_become_messages_to_the_model(text, kind):
    env = make_env("asyncrl/Calculator-v0")
    env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(text)
    assert not terminated and not truncated
    assert reward == 0.0
    assert observation[0]["role"] == "tool" and observation[0]["content"].startswith("Error:")
    assert info["tool_error_kinds"] == {kind: 1}


def test_turn_limit_truncates_and_scores():
    env = CalculatorEnv(max_turns=2)
    env.reset(seed=0)
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>'
    assert env.step(call)[2:4] == (False, False)
    _, _, terminated, truncated, info = env.step(call)
    assert truncated and not terminated
    assert info["reward_components"]["correct"] == 0.0


class _CrashingTool:
    name = "calculator"
    schema = Calculator.schema
    calls = 0

    async def __call__(self, **arguments):
        type(self).calls += 1
        raise ToolFault("backend down")


class _CrashingEnv(CalculatorEnv):
    def make_tools(self):
        return [_CrashingTool()]


def test_crashing_tool_is_retried_then_fails_the_episode_unscored():
    env = _CrashingEnv(tool_retries=2)
    env.reset(seed=0)
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>'
    _, reward, terminated, _, info = env.step(call)
    assert terminated and reward == 0.0
    assert "backend down" in info["failure"]
    assert _CrashingTool.calls == 3
    assert "reward_components" not in info


def test_step_works_inside_a_running_event_loop():
    env = make_env("asyncrl/Calculator-v0")

    async def inside_loop():
        env.reset(seed=0)
        return env.step("<answer>1</answer>")

    assert asyncio.run(inside_loop())[2] is True


@pytest.mark.parametrize("expression", ["__import__('os')", "2**10**10", "1/0", "a+1", "[1]*9"])
def test_calculator_refuses_what_is_not_bounded_arithmetic(expression):
    with pytest.raises(ToolArgumentError):
        evaluate(expression)


def test_calculator_arithmetic():
    assert evaluate("37 * 12 + 5") == 449
    assert evaluate("-(3 - 10) // 2") == 3


def test_unknown_env_is_one_clear_error():
    with pytest.raises(EnvConfigError, match="unknown environment"):
        make_env("asyncrl/NoSuchEnv-v0")
    with pytest.raises(EnvConfigError, match="cannot import"):
        make_env("no_such_pkg.mod:Thing")


def test_tool_latency_is_service_time_and_a_slow_tool_is_the_envs_fault():
    import time

    from envs.base import dumps_call

    env = CalculatorEnv(tool_latency_s=0.05)
    env.reset(seed=1)
    started = time.perf_counter()
    _, _, _, _, info = env.step(dumps_call("calculator", {"expression": "2 + 3"}))
    assert time.perf_counter() - started >= 0.05 and not info.get("failure")
    assert env.messages[-1] == {"role": "tool", "content": "5"}

    slow = CalculatorEnv(tool_latency_s=0.2, tool_timeout_s=0.05, tool_retries=0)
    slow.reset(seed=1)
    _, _, terminated, _, info = slow.step(dumps_call("calculator", {"expression": "2 + 3"}))
    assert terminated and "timed out" in info["failure"]


def test_slow_calls_take_the_tail_latency_at_their_rate():
    import time

    async def durations(tool: Calculator, calls: int) -> list[float]:
        out = []
        for _ in range(calls):
            started = time.perf_counter()
            assert await tool(expression="6 * 7") == "42"
            out.append(time.perf_counter() - started)
        return out

    never = asyncio.run(durations(Calculator(slow_rate=0.0, slow_latency_s=0.2), 5))
    assert max(never) < 0.1
    always = asyncio.run(durations(Calculator(slow_rate=1.0, slow_latency_s=0.05), 3))
    assert min(always) >= 0.05
    some = asyncio.run(durations(Calculator(slow_rate=0.3, slow_latency_s=0.02, seed=0), 40))
    slow = sum(d >= 0.02 for d in some)
    assert 4 <= slow <= 20  # 30% of 40, seeded
