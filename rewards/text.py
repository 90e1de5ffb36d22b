"""Text-answer rewards: the final `<answer>` tag, normalised exact match, format.

An answer is what the last assistant turn states inside its last
`<answer>...</answer>` tag. Normalisation follows the SQuAD convention (case,
punctuation, articles, whitespace), so "The Nile." matches "nile".
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

from rewards import Message, final_assistant_text

ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def tagged_answer(text: str) -> str | None:
    """The content of the last `<answer>` tag in `text`, or None."""
    found = ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def accepted_answers(task: dict[str, Any]) -> list[str]:
    """`task["answer"]` as a list of accepted strings (one answer or its aliases)."""
    answer = task["answer"]
    return [str(a) for a in answer] if isinstance(answer, list | tuple) else [str(answer)]


def exact_match(messages: Sequence[Message], task: dict[str, Any]) -> dict[str, float]:
    """`correct`: the tagged final answer equals an accepted answer after
    normalisation; `format`: the final turn has an `<answer>` tag."""
    answer = tagged_answer(final_assistant_text(messages))
    if answer is None:
        return {"correct": 0.0, "format": 0.0}
    wanted = {normalize(a) for a in accepted_answers(task)}
    return {"correct": float(normalize(answer) in wanted), "format": 1.0}


def answer_format(messages: Sequence[Message], task: dict[str, Any]) -> float:
    """1 when the final turn commits to exactly one non-empty `<answer>` and
    leaves no tool call open; a shaping term, never a correctness signal."""
    text = final_assistant_text(messages)
    answers = ANSWER_TAG.findall(text)
    well_formed = len(answers) == 1 and bool(answers[0].strip())
    return float(well_formed and "<tool_call>" not in text)
