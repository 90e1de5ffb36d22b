"""Code rewards: hidden unit tests run against the model's final program.

The final assistant turn's last ```python block is the solution. It runs in the
sandbox with a harness that calls the task's function on each hidden input and
prints the outputs as one JSON line; the outputs are compared here, outside the
sandbox, with the expected values, which never enter it. So a program cannot
pass by printing a fake report or by returning objects that compare equal to
anything: it has to produce the right values (compared as canonical JSON).

A task holds `function` (the name to call), `inputs` (a list of argument
lists) and `expected` (the outputs, same order).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from core.sandbox import SandboxLimits, run_python_sync
from rewards import Message, final_assistant_text

CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
REPORT_MARK = "__asyncrl_outputs__"
TEST_LIMITS = SandboxLimits(wall_s=10.0, cpu_s=5, output_bytes=1 << 20)

_HARNESS = """

def __asyncrl_run():
    import json as _json
    outputs = []
    for args in _json.loads({inputs!r}):
        try:
            outputs.append(_json.dumps({function}(*args), sort_keys=True))
        except BaseException as exc:  # a failing test, not a failing run
            outputs.append(None)
    print({mark!r} + _json.dumps(outputs), flush=True)

__asyncrl_run()
"""


def extract_code(text: str) -> str | None:
    """The last fenced Python block of `text` (```python ... ```), or None."""
    blocks = CODE_BLOCK.findall(text)
    return blocks[-1] if blocks else None


def test_program(solution: str, task: dict[str, Any]) -> str:
    """The solution followed by the harness for the task's hidden inputs."""
    harness = _HARNESS.format(
        inputs=json.dumps(task["inputs"]), function=task["function"], mark=REPORT_MARK
    )
    return solution + "\n" + harness


def passed_fraction(stdout: str, expected: Sequence[Any]) -> float:
    """Share of the expected outputs matched by the harness's last report line."""
    reports = [line for line in stdout.splitlines() if line.startswith(REPORT_MARK)]
    if not reports or not expected:
        return 0.0
    try:
        outputs = json.loads(reports[-1][len(REPORT_MARK) :])
    except ValueError:
        return 0.0
    if not isinstance(outputs, list) or len(outputs) != len(expected):
        return 0.0
    wanted = [json.dumps(value, sort_keys=True) for value in expected]
    return sum(got == want for got, want in zip(outputs, wanted, strict=True)) / len(wanted)


def code_tests(messages: Sequence[Message], task: dict[str, Any]) -> dict[str, float]:
    """`passed`: share of hidden tests the final program passes;
    `format`: the final turn holds a ```python block."""
    solution = extract_code(final_assistant_text(messages))
    if solution is None:
        return {"passed": 0.0, "format": 0.0}
    result = run_python_sync(test_program(solution, task), TEST_LIMITS)
    return {"passed": passed_fraction(result.stdout, task["expected"]), "format": 1.0}
