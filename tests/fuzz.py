"""How many examples the hypothesis fuzz tests draw: the CI count, or 10x that
with `ASYNCRL_FUZZ_LONG=1` (`make fuzz`, outside CI)."""

from __future__ import annotations

import os

LONG_FACTOR = 10


def fuzz_examples(in_ci: int) -> int:
    """`in_ci` examples, times LONG_FACTOR in the long mode."""
    return in_ci * LONG_FACTOR if os.environ.get("ASYNCRL_FUZZ_LONG") == "1" else in_ci
