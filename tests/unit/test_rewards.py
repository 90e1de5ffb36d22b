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
