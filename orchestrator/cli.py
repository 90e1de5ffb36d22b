"""The command line before Hydra runs it: env-kwargs forms and a one-line override check.

Hydra reads the command line itself (its flags: `--cfg`, `--resolve`, `--info`,
`-m/--multirun`, `--config-name`, `--config-dir`, ...). This module reads it
the same way, with Hydra's own argument parser, and does two things first:

- `normalize` rewrites the env-kwargs forms users type into Hydra's. The kwargs
  are the env's, not the schema's, so any name goes: `env.kwargs.k=v` becomes
  `++env.kwargs.k=v`; `env.kwargs={...}` replaces the mapping (Hydra would merge
  into it, so `env.kwargs={}` did nothing); `~env.kwargs` empties it; and
  `env.id=...` starts the kwargs empty, i.e. from that env's own defaults and
  not the default group's (the calculator's).
- `check_overrides` composes the config as the run will (core.compose, with Hydra's
  search path and `--config-dir`), each sweep combination of a multirun included,
  and reports the first problem in one line (Hydra's own report of the same error
  spans a page).

Nothing here imports the run or anything heavy.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from typing import Any

from core.compose import CONF_DIR, compose

__all__ = ["CONF_DIR", "check_overrides", "first_lines", "normalize", "parse_command_line"]

MAX_SWEEP_CHECKS = 64
"""A multirun's combinations checked before it starts (each compose takes ~0.1 s)."""

_CLEAR_KWARGS = ["env.kwargs=null", "++env.kwargs={}"]
# Hydra merges a mapping into a mapping (OmegaConf.update(merge=True),
# hydra/_internal/config_loader_impl.py:390), but sets a mapping over a non-mapping:
# so `null` first, then the new mapping. The `++` keeps the two apart in a
# multirun, whose sweeper keys overrides by their prefixed key
# (hydra/_internal/core_plugins/basic_sweeper.py:112-126).


def parse_command_line(argv: list[str]) -> argparse.Namespace | None:
    """`argv` as hydra.main will read it (its own parser); None where Hydra itself
    exits on it (`--version`, a malformed flag), which is Hydra's to report."""
    from hydra._internal.utils import get_args_parser  # what hydra.main parses with

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # Hydra reports it, once
            return get_args_parser().parse_args(argv)
    except SystemExit:
        return None


def normalize(argv: list[str]) -> list[str]:
    """`argv` with its env-kwargs overrides in Hydra's forms (module docstring);
    flags and every other override untouched and in place."""
    args = parse_command_line(argv)
    if args is None or not args.overrides:
        return list(argv)
    rewritten = [_rewrite(override) for override in args.overrides]
    if _sets_env_id(args.overrides) and not _sets_kwargs_whole(args.overrides):
        rewritten[0] = _CLEAR_KWARGS + rewritten[0]
    out, pending = [], list(zip(args.overrides, rewritten, strict=True))
    for arg in argv:
        if pending and arg == pending[0][0]:
            out.extend(pending.pop(0)[1])
        else:
            out.append(arg)
    return out


def _parse(override: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_override(override)
    except HydraException:
        return None  # check_overrides reports it


def _rewrite(override: str) -> list[str]:
    parsed = _parse(override)
    if parsed is None or parsed.package is not None:
        return [override]
    key = parsed.key_or_group
    plain = not (parsed.is_delete() or parsed.is_add() or parsed.is_force_add())
    if key.startswith("env.kwargs."):
        return [f"++{override}" if plain else override]
    if key != "env.kwargs" or not (plain or parsed.is_delete()):
        return [override]
    if parsed.is_delete():
        return list(_CLEAR_KWARGS)
    value = override.split("=", 1)[1]
    return [_CLEAR_KWARGS[0], f"++env.kwargs={value}" if value != "null" else _CLEAR_KWARGS[1]]


def _sets_env_id(overrides: list[str]) -> bool:
    parsed = [_parse(o) for o in overrides]
    return any(p is not None and p.key_or_group == "env.id" and not p.is_delete() for p in parsed)


def _sets_kwargs_whole(overrides: list[str]) -> bool:
    parsed = [_parse(o) for o in overrides]
    return any(p is not None and p.key_or_group == "env.kwargs" for p in parsed)


def check_overrides(argv: list[str]) -> str | None:
    """Compose the config `argv` asks for; the first problem as one line, or None.
    Keys, types and choices only: the rules of `validate` are the run's to report
    (a multirun reports them per job)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    args = parse_command_line(argv)
    if args is None or args.help or args.hydra_help:
        return None
    try:
        for overrides in _combinations(args.overrides, bool(args.multirun)):
            compose(overrides, args.config_dir, args.config_name or "config", checked=False)
    except (HydraException, OmegaConfBaseException) as exc:
        return first_lines(exc)
    return None


def _combinations(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists to check: the one run, or a multirun's jobs (the first
    MAX_SWEEP_CHECKS of them), as Hydra's basic sweeper forms them."""
    if not multirun:
        return [overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    (jobs,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return jobs[:MAX_SWEEP_CHECKS]


def first_lines(exc: BaseException) -> str:
    """The headline of an error and of its cause, without OmegaConf's key dump."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 2:
        lines = [line.strip() for line in str(current).splitlines() if line.strip()]
        if lines and not lines[0].startswith("To append"):
            parts.append(lines[0].rstrip("."))
        current = current.__cause__
    return ": ".join(parts) or "invalid configuration"
