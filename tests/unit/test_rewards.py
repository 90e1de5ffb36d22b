from __future__ import annotations

import pytest

from rewards import score
from rewards.math import extract_answer, numeric_match


def _conv(text):
    return [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    "text, correct, fmt",
    [
        ("<answer>42</answer>", 1.0, 1.0),
        ("<answer> 42.0 </answer>", 1.0, 1.0),
        ("the answer is 42", 1.0, 0.0),
        ("<answer>41</answer>", 0.0, 1.0),
        ("<answer>forty-two</answer>", 0.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_numeric_match(text, correct, fmt):
    assert numeric_match(_conv(text), {"answer": "42"}) == {"correct": correct, "format": fmt}


def test_last_tag_wins():
    assert extract_answer("<answer>1</answer> no, <answer>2</answer>") == ("2", True)


def test_score_weights_components():
    total, parts = score(
        numeric_match, _conv("<answer>41</answer>"), {"answer": "42"}, {"format": 0.1}
    )
    assert total == pytest.approx(0.1) and parts == {"correct": 0.0, "format": 1.0}
    assert score(lambda m, t: 0.5, [], {})[0] == 0.5


# -- text, tolerance, math-verify, format, composition ------------------------------


@pytest.mark.parametrize(
    "text, answer, correct, fmt",
    [
        ("<answer>The Nile.</answer>", "nile", 1.0, 1.0),
        ("<answer>nile river</answer>", ["Nile", "Nile River"], 1.0, 1.0),
        ("<answer>Amazon</answer>", "Nile", 0.0, 1.0),
        ("Nile", "Nile", 0.0, 0.0),
    ],
)
def test_exact_match(text, answer, correct, fmt):
    from rewards.text import exact_match

    assert exact_match(_conv(text), {"answer": answer}) == {"correct": correct, "format": fmt}


def test_numeric_close_uses_the_task_tolerance():
    from rewards.math import numeric_close

    assert numeric_close(_conv("<answer>3.1416</answer>"), {"answer": "3.14159265"})["correct"] == 0
    task = {"answer": "3.14159265", "rel_tol": 1e-4}
    assert numeric_close(_conv("<answer>3.1416</answer>"), task)["correct"] == 1.0
    assert numeric_close(_conv("<answer>nan</answer>"), {"answer": "1"})["correct"] == 0.0


@pytest.mark.parametrize(
    "gold, text, correct",
    [
        ("\\frac{1}{2}", "<answer>0.5</answer>", 1.0),
        ("x^2+2x+1", "<answer>(x+1)^2</answer>", 1.0),
        ("\\{1,2\\}", "so the set is $\\{2,1\\}$", 1.0),
        ("3", "<answer>4</answer>", 0.0),
        ("3", "", 0.0),
    ],
)
def test_math_verify_equivalence(gold, text, correct):
    from rewards.math import math_verify_match

    assert math_verify_match(_conv(text), {"answer": gold})["correct"] == correct


def test_math_verify_works_off_the_main_thread():
    from concurrent.futures import ThreadPoolExecutor

    from rewards.math import math_verify_match

    with ThreadPoolExecutor(1) as pool:
        value = pool.submit(math_verify_match, _conv("<answer>2/4</answer>"), {"answer": "0.5"})
        assert value.result()["correct"] == 1.0


def test_answer_format_wants_one_tag_and_no_open_call():
    from rewards.text import answer_format

    assert answer_format(_conv("<answer>4</answer>"), {}) == 1.0
    assert answer_format(_conv("<answer>4</answer><answer>5</answer>"), {}) == 0.0
    assert answer_format(_conv("<tool_call>{}</tool_call><answer>4</answer>"), {}) == 0.0


def test_composition_names_and_weights_every_component():
    from rewards import resolve_reward

    reward = resolve_reward({"answer": "numeric_match", "style": "answer_format"})
    total, parts = score(reward, _conv("<answer>42</answer>"), {"answer": "42"}, {"style": 0.5})
    assert parts == {"answer/correct": 1.0, "answer/format": 1.0, "style": 1.0}
    assert total == pytest.approx(2.5)


def test_rewards_resolve_by_name_and_path_and_fail_in_one_line():
    from rewards import RewardConfigError, resolve_reward
    from rewards.math import math_verify_match
    from rewards.text import exact_match

    assert resolve_reward("math_verify") is math_verify_match
    assert resolve_reward("rewards.text:exact_match") is exact_match
    assert resolve_reward("rewards.text.exact_match") is exact_match
    with pytest.raises(RewardConfigError, match="unknown reward 'nope'.*math_verify"):
        resolve_reward("nope")
