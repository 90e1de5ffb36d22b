"""The `python` tool: runs model-written code in the sandbox (core/sandbox.py).

Whatever the code does (crash, loop, allocate, print forever, try to escape)
is the model's business: the tool returns its output and one line per limit
hit. Only a sandbox that cannot start is the environment's fault (ToolFault).
"""

from __future__ import annotations

from typing import Any

from core.sandbox import SandboxLimits, SandboxUnavailable, format_result, run_python
from envs.base import ToolArgumentError, ToolFault, tool_schema

MAX_CODE_CHARS = 20_000


class PythonTool:
    name = "python"

    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()
        self.schema = tool_schema(
            self.name,
            "Run a Python 3 program in a fresh sandbox (no network, no files but its own) "
            "and return its stdout and stderr. Print what you want to see.",
            {"code": {"type": "string", "description": "the whole program"}},
        )

    async def __call__(self, **arguments: Any) -> str:
        code = arguments.get("code")
        if set(arguments) != {"code"} or not isinstance(code, str) or not code.strip():
            raise ToolArgumentError('python takes one argument "code": a non-empty string')
        if len(code) > MAX_CODE_CHARS:
            raise ToolArgumentError(f"code longer than {MAX_CODE_CHARS} characters")
        try:
            result = await run_python(code, self.limits)
        except SandboxUnavailable as exc:
            raise ToolFault(str(exc)) from exc
        return format_result(result)
