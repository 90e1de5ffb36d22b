"""Writes envs/data/arithmetic.jsonl, the dataset Dataset-v0 poses by default.

`python -m envs.data.make_math_dataset [--out PATH] [--seed 0]`. The same seed
gives the same bytes on any Python: every choice comes from
`random.Random.random()`, the one part of `random` whose sequence Python promises
to keep (randrange and shuffle may change between versions).

Rows are {"question", "answer", "kind", "op"} with distinct questions, shuffled
(`op` is the operation, "+", "-" or "*": `env.kwargs.where={op: "+"}` keeps a subset):

- `arithmetic_to_9`: a + b, a - b (a >= b) or a * b with a, b in 1..9;
- `arithmetic_to_20`: the same with a, b in 1..20, at least one above 9;
  both phrased as Calculator-v0 phrases its questions ("What is 3 + 4?");
- `word`: one-step word problems from templates ("Ana has 3 apples and buys 4
  more. How many apples does Ana have now?").

Small numbers and one operation: a policy of a few million parameters can learn it.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from envs.calculator import QUESTION_FORMS

OUT = Path(__file__).resolve().parent / "arithmetic.jsonl"
SEED = 0
COUNTS = {"arithmetic_to_9": 800, "arithmetic_to_20": 1900, "word": 300}
"""Rows of each kind (3000 in all)."""
OPERATIONS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}
NAMES = ("Ana", "Ben", "Carla", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Kai")
ITEMS = ("apples", "pears", "marbles", "stickers", "pencils", "cookies", "books", "shells", "cards")
WORD_TEMPLATES = (
    ("+", "{name} has {a} {items} and buys {b} more. How many {items} does {name} have now?"),
    (
        "+",
        "There are {a} {items} in a box. {name} puts in {b} more. How many {items} are in the box?",
    ),
    (
        "-",
        "{name} has {a} {items} and gives {b} to a friend. How many {items} does {name} have left?",
    ),
    ("-", "{name} had {a} {items} and lost {b}. How many {items} does {name} have now?"),
    ("*", "{name} buys {a} bags with {b} {items} in each bag. How many {items} does {name} buy?"),
    ("*", "There are {a} boxes with {b} {items} in each. How many {items} are there in all?"),
)
"""(operation, template): one step each; operands keep the plurals grammatical."""


def pick(rng: random.Random, n: int) -> int:
    """An index in [0, n) from `rng.random()` alone (see the module docstring)."""
    return min(int(rng.random() * n), n - 1)


def shuffled(rng: random.Random, items: list) -> list:
    """A Fisher-Yates shuffle built on `pick`."""
    items = list(items)
    for i in range(len(items) - 1, 0, -1):
        j = pick(rng, i + 1)
        items[i], items[j] = items[j], items[i]
    return items


def expressions(low: int, high: int, above: int = 0) -> Iterator[tuple[int, str, int]]:
    """(a, op, b) with a, b in low..high, a >= b for subtraction, max(a, b) > above."""
    for op in OPERATIONS:
        for a in range(low, high + 1):
            for b in range(low, high + 1):
                if (op != "-" or a >= b) and max(a, b) > above:
                    yield a, op, b


def arithmetic_rows(rng: random.Random, kind: str, high: int, above: int) -> list[dict]:
    """`COUNTS[kind]` distinct questions over the expressions in 1..high."""
    pool = [(form, a, op, b) for a, op, b in expressions(1, high, above) for form in QUESTION_FORMS]
    chosen = shuffled(rng, pool)[: COUNTS[kind]]
    if len(chosen) < COUNTS[kind]:
        raise ValueError(f"only {len(pool)} distinct {kind} questions")
    return [
        _row(form.format(f"{a} {op} {b}"), OPERATIONS[op](a, b), kind, op)
        for form, a, op, b in chosen
    ]


def _row(question: str, answer: int, kind: str, op: str) -> dict:
    return {"question": question, "answer": str(answer), "kind": kind, "op": op}


def word_operands(rng: random.Random, op: str) -> tuple[int, int]:
    if op == "*":
        return 2 + pick(rng, 8), 2 + pick(rng, 8)  # 2..9 bags of 2..9
    a = 2 + pick(rng, 19)  # 2..20
    return (a, 1 + pick(rng, 20)) if op == "+" else (a, 1 + pick(rng, a - 1))


def word_rows(rng: random.Random) -> list[dict]:
    """`COUNTS["word"]` distinct word problems."""
    rows: dict[str, dict] = {}
    while len(rows) < COUNTS["word"]:
        op, template = WORD_TEMPLATES[pick(rng, len(WORD_TEMPLATES))]
        a, b = word_operands(rng, op)
        name, items = NAMES[pick(rng, len(NAMES))], ITEMS[pick(rng, len(ITEMS))]
        question = template.format(name=name, items=items, a=a, b=b)
        rows.setdefault(question, _row(question, OPERATIONS[op](a, b), "word", op))
    return list(rows.values())


def make_rows(seed: int = SEED) -> list[dict]:
    """Every row, in file order."""
    rng = random.Random(seed)
    rows = arithmetic_rows(rng, "arithmetic_to_9", high=9, above=0)
    rows += arithmetic_rows(rng, "arithmetic_to_20", high=20, above=9)
    rows += word_rows(rng)
    return shuffled(rng, rows)


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    rows = make_rows(args.seed)
    args.out.write_bytes(to_jsonl(rows).encode("utf-8"))
    print(f"wrote {len(rows)} rows to {args.out}")
    return args.out


if __name__ == "__main__":
    main()
