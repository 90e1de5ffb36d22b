"""Numeric-answer rewards: exact match of the final answer plus a format check."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rewards import Message, final_assistant_text

ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(text: str) -> tuple[str | None, bool]:
    """The answer the text commits to, and whether it used the <answer> tag.

    Inside a tag the whole tag content is the answer; without one, the last
    number in the text is taken (and the format component is lost)."""
    tagged = ANSWER_TAG.findall(text)
    if tagged:
        return tagged[-1].strip(), True
    numbers = NUMBER.findall(text)
    return (numbers[-1] if numbers else None), False


def parse_number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text.replace(",", "").strip())
    except ValueError:
        return None


def numeric_match(messages: Sequence[Message], task: dict[str, Any]) -> dict[str, float]:
    """`correct`: the final answer equals task["answer"] numerically (exact);
    `format`: the final turn states it as <answer>number</answer>."""
    answer, tagged = extract_answer(final_assistant_text(messages))
    value = parse_number(answer)
    expected = parse_number(str(task["answer"]))
    correct = value is not None and expected is not None and value == expected
    return {"correct": float(correct), "format": float(tagged and value is not None)}
