"""Procedural programming problems for Code-v0: statement, hidden tests, reference.

Each family is a statement template with parameters drawn from the task seed,
a reference solution (trusted, run here on the host to compute the expected
outputs) and an input generator. Hidden inputs never appear in the prompt; two
visible examples do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Inputs = list[list[Any]]


@dataclass(frozen=True)
class Family:
    function: str
    statement: str
    """Format string over the drawn parameters."""
    params: Callable[[np.random.Generator], dict[str, Any]]
    reference: Callable[..., Callable[..., Any]]
    """params -> the reference function."""
    inputs: Callable[[np.random.Generator], list[Any]]
    """One argument list."""


def _ints(rng: np.random.Generator, low: int, high: int, size: int) -> list[int]:
    return [int(x) for x in rng.integers(low, high, size=size)]


def _word(rng: np.random.Generator) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "".join(letters[int(i)] for i in rng.integers(0, 26, size=int(rng.integers(1, 8))))


FAMILIES = [
    Family(
        "shift_all",
        "Write `shift_all(xs)` returning a new list with {k} added to every integer of `xs`.",
        lambda r: {"k": int(r.integers(-9, 10))},
        lambda k: lambda xs: [x + k for x in xs],
        lambda r: [_ints(r, -50, 50, int(r.integers(0, 8)))],
    ),
    Family(
        "sum_of_multiples",
        "Write `sum_of_multiples(n)` returning the sum of all integers in [1, n) that are "
        "divisible by {a} or by {b}.",
        lambda r: {"a": int(r.integers(2, 6)), "b": int(r.integers(6, 11))},
        lambda a, b: lambda n: sum(i for i in range(1, n) if i % a == 0 or i % b == 0),
        lambda r: [int(r.integers(0, 200))],
    ),
    Family(
        "count_chars",
        "Write `count_chars(s)` returning how many characters of the string `s` are one of "
        "{chars!r}.",
        lambda r: {"chars": "".join(sorted(set(_word(r) + "a")))},
        lambda chars: lambda s: sum(c in chars for c in s),
        lambda r: [" ".join(_word(r) for _ in range(int(r.integers(1, 5))))],
    ),
    Family(
        "fizz",
        "Write `fizz(n)` returning the list of strings for 1..n where multiples of {a} are "
        "'Fizz', multiples of {b} are 'Buzz', multiples of both are 'FizzBuzz' and other "
        "numbers are their decimal string.",
        lambda r: {"a": int(r.integers(2, 5)), "b": int(r.integers(5, 8))},
        lambda a, b: (
            lambda n: [
                "FizzBuzz"
                if i % a == 0 and i % b == 0
                else "Fizz"
                if i % a == 0
                else "Buzz"
                if i % b == 0
                else str(i)
                for i in range(1, n + 1)
            ]
        ),
        lambda r: [int(r.integers(0, 30))],
    ),
    Family(
        "fib_mod",
        "Write `fib_mod(n)` returning the n-th Fibonacci number (fib(0)=0, fib(1)=1) modulo {m}.",
        lambda r: {"m": int(r.integers(7, 1000))},
        lambda m: lambda n: _fib(n) % m,
        lambda r: [int(r.integers(0, 90))],
    ),
    Family(
        "running_max",
        "Write `running_max(xs)` returning a list whose i-th item is the largest of xs[0..i].",
        lambda r: {},
        lambda: lambda xs: [max(xs[: i + 1]) for i in range(len(xs))],
        lambda r: [_ints(r, -100, 100, int(r.integers(0, 10)))],
    ),
    Family(
        "caesar",
        "Write `caesar(s)` shifting every lowercase letter of `s` forward by {k} places in "
        "the alphabet (wrapping from z to a) and leaving other characters unchanged.",
        lambda r: {"k": int(r.integers(1, 26))},
        lambda k: (
            lambda s: "".join(chr((ord(c) - 97 + k) % 26 + 97) if "a" <= c <= "z" else c for c in s)
        ),
        lambda r: [" ".join(_word(r) for _ in range(int(r.integers(1, 4)))) + "!"],
    ),
    Family(
        "gcd_all",
        "Write `gcd_all(xs)` returning the greatest common divisor of the positive integers "
        "in the non-empty list `xs`, multiplied by {k}.",
        lambda r: {"k": int(r.integers(1, 5))},
        lambda k: lambda xs: math.gcd(*xs) * k,
        lambda r: [
            [int(x) * int(r.integers(1, 6)) for x in _ints(r, 1, 40, int(r.integers(1, 5)))]
        ],
    ),
    Family(
        "digit_power_sum",
        "Write `digit_power_sum(n)` returning the sum of each decimal digit of the "
        "non-negative integer `n` raised to the power {p}.",
        lambda r: {"p": int(r.integers(1, 5))},
        lambda p: lambda n: sum(int(d) ** p for d in str(n)),
        lambda r: [int(r.integers(0, 10**6))],
    ),
    Family(
        "second_largest",
        "Write `second_largest(xs)` returning the second largest distinct value of `xs`, "
        "or {default} when there is none.",
        lambda r: {"default": int(r.integers(-5, 0))},
        lambda default: lambda xs: sorted(set(xs))[-2] if len(set(xs)) > 1 else default,
        lambda r: [_ints(r, 0, 10, int(r.integers(0, 7)))],
    ),
]


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def make_task(rng: np.random.Generator, num_tests: int = 8) -> dict[str, Any]:
    """A problem: statement, two visible examples, hidden inputs and outputs."""
    family = FAMILIES[int(rng.integers(0, len(FAMILIES)))]
    params = family.params(rng)
    solve = family.reference(**params)
    inputs = [family.inputs(rng) for _ in range(num_tests + 2)]
    outputs = [solve(*args) for args in inputs]
    examples = "\n".join(
        f"{family.function}({', '.join(map(repr, args))}) == {out!r}"
        for args, out in zip(inputs[:2], outputs[:2], strict=True)
    )
    return {
        "function": family.function,
        "statement": family.statement.format(**params),
        "examples": examples,
        "inputs": inputs[2:],
        "expected": outputs[2:],
        "reference": _reference_source(family, params),
    }


def _reference_source(family: Family, params: dict[str, Any]) -> str:
    """The reference as program text: scripted demonstrations and tests submit it
    through the sandbox exactly like model code."""
    return _SOURCES[family.function].format(**params)


_SOURCES = {
    "shift_all": "def shift_all(xs):\n    return [x + {k} for x in xs]\n",
    "sum_of_multiples": (
        "def sum_of_multiples(n):\n"
        "    return sum(i for i in range(1, n) if i % {a} == 0 or i % {b} == 0)\n"
    ),
    "count_chars": "def count_chars(s):\n    return sum(c in {chars!r} for c in s)\n",
    "fizz": (
        "def fizz(n):\n    out = []\n    for i in range(1, n + 1):\n"
        "        if i % {a} == 0 and i % {b} == 0: out.append('FizzBuzz')\n"
        "        elif i % {a} == 0: out.append('Fizz')\n"
        "        elif i % {b} == 0: out.append('Buzz')\n"
        "        else: out.append(str(i))\n    return out\n"
    ),
    "fib_mod": (
        "def fib_mod(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
        "    return a % {m}\n"
    ),
    "running_max": (
        "def running_max(xs):\n    out = []\n    for x in xs:\n"
        "        out.append(x if not out else max(out[-1], x))\n    return out\n"
    ),
    "caesar": (
        "def caesar(s):\n    return ''.join(chr((ord(c) - 97 + {k}) % 26 + 97) "
        "if 'a' <= c <= 'z' else c for c in s)\n"
    ),
    "gcd_all": "import math\n\ndef gcd_all(xs):\n    return math.gcd(*xs) * {k}\n",
    "digit_power_sum": "def digit_power_sum(n):\n    return sum(int(d) ** {p} for d in str(n))\n",
    "second_largest": (
        "def second_largest(xs):\n    v = sorted(set(xs))\n"
        "    return v[-2] if len(v) > 1 else {default}\n"
    ),
}
