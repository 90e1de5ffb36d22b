"""Numeric and mathematical answer rewards.

- `numeric_match`: the final answer equals `task["answer"]` exactly as a number;
- `numeric_close`: within `task["rel_tol"]` / `task["abs_tol"]`;
- `math_verify_match`: symbolic equivalence by Hugging Face's `math-verify`
  (LaTeX, fractions, sets, intervals: "\\frac{1}{2}" equals "0.5").
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from typing import Any

from rewards import Message, final_assistant_text
from rewards.text import ANSWER_TAG

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
DEFAULT_REL_TOL = 1e-6
DEFAULT_ABS_TOL = 1e-9


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
        value = float(text.replace(",", "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def numeric_match(messages: Sequence[Message], task: dict[str, Any]) -> dict[str, float]:
    """`correct`: the final answer equals task["answer"] numerically (exact);
    `format`: the final turn states it as <answer>number</answer>."""
    answer, tagged = extract_answer(final_assistant_text(messages))
    value = parse_number(answer)
    expected = parse_number(str(task["answer"]))
    correct = value is not None and expected is not None and value == expected
    return {"correct": float(correct), "format": float(tagged and value is not None)}


def numeric_close(messages: Sequence[Message], task: dict[str, Any]) -> dict[str, float]:
    """Like `numeric_match`, within `task["rel_tol"]` (default 1e-6) or
    `task["abs_tol"]` (default 1e-9) of task["answer"]."""
    answer, tagged = extract_answer(final_assistant_text(messages))
    value = parse_number(answer)
    expected = parse_number(str(task["answer"]))
    correct = (
        value is not None
        and expected is not None
        and math.isclose(
            value,
            expected,
            rel_tol=float(task.get("rel_tol", DEFAULT_REL_TOL)),
            abs_tol=float(task.get("abs_tol", DEFAULT_ABS_TOL)),
        )
    )
    return {"correct": float(correct), "format": float(tagged and value is not None)}


def math_verify_match(messages: Sequence[Message], task: dict[str, Any]) -> dict[str, float]:
    """`correct`: math-verify finds the final answer equivalent to task["answer"]
    (the gold is parsed as LaTeX or plain math; the answer from its <answer>
    tag, else from the whole final turn); `format`: the tag was used."""
    from math_verify import parse, verify

    text = final_assistant_text(messages)
    tagged = ANSWER_TAG.findall(text)
    candidate = tagged[-1] if tagged else text
    # math-verify's timeouts use SIGALRM, which only the main thread may set;
    # env pools score inside an event-loop thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold = parse(_as_math(str(task["answer"])), parsing_timeout=timeout)
    found = parse(_as_math(candidate), parsing_timeout=timeout) if candidate.strip() else []
    correct = bool(gold and found and verify(gold, found, timeout_seconds=timeout))
    return {"correct": float(correct), "format": float(bool(tagged))}


def _as_math(text: str) -> str:
    """math-verify extracts from LaTeX environments; a bare answer gets `$...$`."""
    text = text.strip()
    return text if "$" in text or "\\boxed" in text or "\\(" in text else f"${text}$"
