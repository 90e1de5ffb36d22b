"""bench.peer's pure parts: the task's scoring is the env's own reward for the replies
replayed through it, TRL's tool loop sees the task as asyncrl does (its render of the
prompt, its parse of a tool call), and the report's reward at equal loop time and
ratios (no TRL training, no run)."""

from __future__ import annotations

import pytest

from bench.peer import AGENTIC, CASES, _report, _reward_at, accounting, pooled, reward_cell
from bench.peer_tasks import assistant_turns, opening, replay
from envs import make_env
from envs.base import dumps_call

ENV = {"id": "asyncrl/Calculator-v0", "kwargs": {"max_turns": 1}}


def _answer(seed: int) -> str:
    _, info = make_env(ENV["id"], ENV["kwargs"]).reset(seed=seed)
    return info["task"]["answer"]


def test_a_right_answer_scores_the_envs_reward_and_counts_as_correct():
    reply = f"<answer>{_answer(3)}</answer>"
    assert replay(ENV, 3, [reply])[0] == pytest.approx(1.1)  # correct 1.0 + format 0.1
    assert replay(ENV, 3, [reply])[1]


def test_a_wrong_answer_or_a_tool_call_is_not_correct():
    assert not replay(ENV, 3, ["<answer>-1</answer>"])[1]
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>'
    assert not replay(ENV, 3, [call])[1] and replay(ENV, 3, [call])[0] < 1.0


def _expression(seed: int) -> str:
    _, info = make_env(AGENTIC["id"], AGENTIC["kwargs"]).reset(seed=seed)
    return info["task"]["expression"]


def test_a_multi_turn_episode_is_replayed_turn_by_turn_without_the_tools_latency():
    call = dumps_call("calculator", {"expression": _expression(5)})
    answer = f"<answer>{_answer_of(AGENTIC, 5)}</answer>"
    assert replay(AGENTIC, 5, [call, answer]) == (pytest.approx(1.1), True)
    assert replay(AGENTIC, 5, [call]) == (0.0, False)  # left calling the tool: unanswered
    assert replay(AGENTIC, 5, [answer, "ignored"])[1]  # the episode ended at the answer


def _answer_of(env: dict, seed: int) -> str:
    _, info = make_env(env["id"], env["kwargs"]).reset(seed=seed)
    return info["task"]["answer"]


def test_trl_renders_the_agentic_prompt_as_asyncrl_does(tiny_tokenizer, codec):
    from bench.peer_trl import check_render, trl_calculator

    messages = opening(AGENTIC, 7)
    prompt = codec.render(messages, add_generation_prompt=True)
    check_render(tiny_tokenizer, messages, [trl_calculator(0.0)], prompt)

    async def calculator(expression: str) -> str:  # a return type enters TRL's schema
        """Evaluate an arithmetic expression.

        Args:
            expression: e.g. 37 * 12 + 5
        """
        return expression

    with pytest.raises(SystemExit, match="differently"):
        check_render(tiny_tokenizer, messages, [calculator], prompt)


def test_a_tool_call_trl_parses_replays_as_the_text_the_policy_wrote(tiny_tokenizer, codec):
    # TRL is the `peer` extra, for bench.peer only: `make test` does not install it
    # (`make bench` does), and this checks the bridge to TRL's parser where it is.
    chat_template_utils = pytest.importorskip(
        "trl.chat_template_utils", reason="TRL (the peer extra) is not installed"
    )
    parse_response, qwen3_template = (
        chat_template_utils.parse_response,
        chat_template_utils.qwen3_template,
    )

    from bench.peer_trl import trl_calculator

    before = getattr(tiny_tokenizer, "response_template", None)
    tiny_tokenizer.response_template = qwen3_template
    try:
        messages = opening(AGENTIC, 9)
        prefix = tiny_tokenizer.encode(codec.render(messages, add_generation_prompt=True))
        written = dumps_call("calculator", {"expression": _expression(9)})
        ids = tiny_tokenizer.encode(written + tiny_tokenizer.eos_token)
        parsed = parse_response(tiny_tokenizer, ids, prefix=prefix, tools=[trl_calculator(0.0)])
    finally:
        tiny_tokenizer.response_template = before
    assert parsed["tool_calls"], parsed  # TRL saw the call (and would run the tool)
    answer = f"<answer>{_answer_of(AGENTIC, 9)}</answer>"
    assert assistant_turns([parsed]) == [written]
    assert replay(AGENTIC, 9, [*assistant_turns([parsed]), answer])[1]


def test_reward_at_a_time_averages_the_last_steps_done_by_then():
    steps = [{"loop_s": float(t), "reward": float(t)} for t in range(1, 11)]
    assert _reward_at(steps, 7.5) == pytest.approx((3 + 4 + 5 + 6 + 7) / 5)
    assert _reward_at(steps, 0.5) is None


def _side(loop_s: float, process_s: float, reward: float = 0.5) -> dict:
    steps = CASES["tiny"].steps
    return {
        "loop_s": loop_s,
        "process_s": process_s,
        "startup_s": 1.0,
        "shutdown_s": 1.0,
        "steps": [{"loop_s": loop_s * (i + 1) / steps, "reward": reward} for i in range(steps)],
        "accounting": {"perf/step_s": loop_s / steps},
    }


def test_the_report_compares_every_side_with_trl_at_the_shortest_loop():
    case = CASES["tiny"]
    side = _side
    sides = {"trl": side(60.0, 70.0), "asyncrl_async": side(40.0, 70.0)}
    accuracy = {"start": 0.1, "trl": 0.5, "asyncrl_async": 0.6}
    report = _report(case, sides, accuracy)
    assert report["equal_loop_time_s"] == 40.0
    assert report["ratios"]["asyncrl_async/trl samples/s"] == pytest.approx(1.5)
    assert report["ratios"]["asyncrl_async/trl process time"] == pytest.approx(1.0)
    assert report["sides"]["trl"]["reward_at_equal_time"] == pytest.approx(0.5)


def test_accounting_averages_the_steps_after_the_first_and_skips_what_was_not_logged():
    history = [
        {"perf/step_s": 9.0, "perf/cpu_s/learner": 9.0},
        {"perf/step_s": 2.0, "perf/cpu_s/learner": 1.0},
        {"eval/accuracy": 0.5},  # an evaluation's row, not a step
        {"perf/step_s": 4.0, "perf/cpu_s/learner": 2.0, "perf/learner_borrowed_s": 1.0},
    ]
    means = accounting(history)
    assert means["perf/step_s"] == 3.0 and means["perf/cpu_s/learner"] == 1.5
    assert means["perf/learner_borrowed_s"] == 1.0  # one step logged it
    assert "perf/cpu_s/env" not in means
    assert accounting(history[:1]) == {"perf/step_s": 9.0, "perf/cpu_s/learner": 9.0}


def test_seeds_pool_into_means_with_the_rewards_standard_error_and_ratios_of_means():
    case = CASES["tiny"]
    accuracy = {"start": 0.1, "trl": 0.5, "asyncrl_sync": 0.6}
    reports = [
        _report(
            case, {"trl": _side(60.0, 80.0, 0.2), "asyncrl_sync": _side(40.0, 60.0, r)}, accuracy
        )
        for r in (0.1, 0.3)
    ]
    reports[1]["sides"]["trl"]["samples_per_s"] *= 3  # TRL twice as fast on average
    slow_trl = reports[1]["sides"]["trl"]
    slow_trl["step_end_s"] = [2 * t for t in slow_trl["step_end_s"]]
    report = pooled(reports)
    assert report["seeds"] == 2
    ours, trl = report["sides"]["asyncrl_sync"], report["sides"]["trl"]
    assert ours["reward_at_equal_time"] == pytest.approx(0.2)
    assert ours["reward_at_equal_time_se"] == pytest.approx(0.1)  # stdev 0.1414 / sqrt 2
    assert trl["reward_at_equal_time_se"] == pytest.approx(0.0)
    assert ours["per_seed"]["reward_at_equal_time"] == pytest.approx([0.1, 0.3])
    assert ours["rewards"] == pytest.approx([0.2] * case.steps)
    assert ours["step_end_s"][-1] == pytest.approx(40.0)  # each step's end, mean over seeds
    assert trl["step_end_s"][0] == pytest.approx(1.5 * 60.0 / case.steps)
    assert trl["step_end_s"][-1] == pytest.approx(90.0)
    assert ours["accounting"]["perf/step_s"] == pytest.approx(40.0 / case.steps)
    assert report["ratios"]["asyncrl_sync/trl samples/s"] == pytest.approx(0.75)  # 1.5 / 2
    assert report["ratios"]["asyncrl_sync/trl process time"] == pytest.approx(0.75)
    assert reward_cell(ours) == "0.200 ± 0.100"


def test_one_seed_is_its_own_report():
    sides = {"trl": _side(60.0, 80.0), "asyncrl_sync": _side(40.0, 60.0)}
    one = _report(CASES["tiny"], sides, {"start": 0.1, "trl": 0.5, "asyncrl_sync": 0.6})
    assert pooled([one]) == one | {"seeds": 1}
    assert reward_cell(one["sides"]["trl"]) == "0.500"
