"""Compare finished runs: `python -m bench.compare RUN_DIR... [--metric M] [--out PNG]`.

Reads what a run left in its directory (rollout.launch, bench runs): the config
(`.hydra/config.yaml` or `config.yaml`), `metrics.jsonl` (core.metrics) and, when
there, `summary.json`. Prints the config keys whose values differ across the runs,
the eval metric per evaluated policy version side by side, each run's final and best
value with the wall time to reach it, and draws the metric against step and against
wall time into one PNG. Runs without the eval metric are compared on training
reward (`rollout/reward_mean`) instead, and the output says so.

Nothing here starts, changes or re-evaluates a run; it only reads the files.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_METRIC = "eval/accuracy"
REWARD = "rollout/reward_mean"
EXTRA_EVAL = re.compile(r"^eval/(accuracy|pass@\d+)$")
"""Eval metrics shown beside the chosen one in the table."""
IGNORED_KEYS = ("logger.run_dir", "hydra")
"""Config keys (and their sub-keys) that differ between any two runs and mean nothing."""
MAX_TRAIN_ROWS = 20
"""Training-reward tables (one row per step) are thinned to this many rows."""
MAX_MARKERS = 40
"""Curves with more points than this are drawn without a marker per point."""
MISSING = "-"


class NotARun(Exception):
    """A path given on the command line is not a run directory."""


@dataclass(frozen=True)
class Axis:
    """Where a curve's points come from: which rows, what counts as their step and
    their wall time."""

    metric: str
    step_key: str
    """The row key giving the point's step ("step": the row's own learner step)."""
    time_keys: tuple[str, ...]
    """Row keys giving seconds since the loop started, the first one present wins."""
    step_label: str

    @property
    def is_eval(self) -> bool:
        return self.metric.startswith("eval/")


def axis_for(metric: str) -> Axis:
    """Eval metrics lie on policy versions and the time the evaluation finished;
    anything else on learner steps and the step's elapsed time."""
    if metric.startswith("eval/"):
        return Axis(metric, "eval/version", ("eval/elapsed_s", "perf/elapsed_s"), "version")
    return Axis(metric, "step", ("perf/elapsed_s",), "step")


@dataclass
class Run:
    """One run directory as read from disk."""

    path: Path
    name: str
    config: dict[str, Any] | None
    """Flattened to dotted keys; None when the run left no config file."""
    rows: list[dict[str, float]]
    summary: dict[str, Any] = field(default_factory=dict)
    skipped_lines: int = 0
    """Lines of metrics.jsonl that did not parse (a run killed mid-write)."""

    def points(self, axis: Axis) -> dict[int, dict[str, float]]:
        """step -> the metrics logged for it, rows of the same step merged (the
        later row wins), only rows that carry `axis.metric`'s family."""
        out: dict[int, dict[str, float]] = {}
        for row in self.rows:
            if _carries(row, axis):
                step = int(row.get(axis.step_key, row["step"]))
                out.setdefault(step, {}).update(row)
        return dict(sorted(out.items()))

    def has(self, metric: str) -> bool:
        return any(metric in row for row in self.rows)


# --- loading ------------------------------------------------------------------------


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every path as a Run, named by its directory (parents added where names clash).
    Raises NotARun for the first path that is not a run directory."""
    dirs = [Path(p).resolve() for p in paths]
    return [load_run(d, name) for d, name in zip(dirs, run_names(dirs), strict=True)]


def load_run(path: Path, name: str) -> Run:
    if not path.is_dir():
        raise NotARun(f"{path}: not a directory")
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise NotARun(f"{path}: not a run directory (no metrics.jsonl)")
    rows, skipped = _read_jsonl(metrics)
    return Run(path, name, _read_config(path), rows, _read_summary(path), skipped)


def run_names(dirs: Sequence[Path]) -> list[str]:
    """Each directory's name; where names are equal, as many parent folders as it
    takes to tell them apart (the same directory twice gets `#2`, `#3`, ...)."""
    parts = {d: d.parts[1:] if d.is_absolute() else d.parts for d in dict.fromkeys(dirs)}
    depth = dict.fromkeys(parts, 1)
    while True:
        names = {d: "/".join(p[-depth[d] :]) for d, p in parts.items()}
        taken = list(names.values())
        clashes = [d for d, n in names.items() if taken.count(n) > 1 and depth[d] < len(parts[d])]
        if not clashes:
            break
        for d in clashes:
            depth[d] += 1
    seen: dict[Path, int] = {}
    out = []
    for d in dirs:
        seen[d] = seen.get(d, 0) + 1
        out.append(names[d] if seen[d] == 1 else f"{names[d]}#{seen[d]}")
    return out


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings to `{"a.b.c": leaf}`; an empty mapping is a leaf."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _read_config(path: Path) -> dict[str, Any] | None:
    for candidate in (path / ".hydra" / "config.yaml", path / "config.yaml"):
        if candidate.is_file():
            return flatten(yaml.safe_load(candidate.read_text()) or {})
    return None


def _read_summary(path: Path) -> dict[str, Any]:
    """summary.json (written when a run ends); {} when absent or cut short."""
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _read_jsonl(path: Path) -> tuple[list[dict[str, float]], int]:
    rows: list[dict[str, float]] = []
    skipped = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
        else:
            skipped += 1
    return rows, skipped


# --- what gets printed ----------------------------------------------------------------


def config_diff(runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """(dotted key, value per run) for every key whose values differ across the runs
    that have a config; a key a run lacks shows as `-`. IGNORED_KEYS left out."""
    configs = [r.config for r in runs if r.config is not None]
    keys = sorted({k for c in configs for k in c if not _ignored(k)})
    diff = []
    for key in keys:
        values = [_show(c[key]) if key in c else MISSING for c in configs]
        if len(set(values)) > 1:
            diff.append((key, values))
    return diff


def choose_axis(runs: Sequence[Run], metric: str) -> tuple[Axis, str | None]:
    """The axis to compare on and, when it is not `metric`'s, the line saying why:
    an eval metric missing from any run sends every run to training reward."""
    lacking = [r.name for r in runs if not r.has(metric)]
    if not metric.startswith("eval/") or not lacking:
        return axis_for(metric), None
    note = (
        f"no {metric} in {', '.join(lacking)}: comparing training reward {REWARD} "
        "against learner step and perf/elapsed_s instead"
    )
    return axis_for(REWARD), note


def curve_table(runs: Sequence[Run], axis: Axis) -> tuple[list[str], list[list[str]]]:
    """One row per step (union over runs), a column per run for `axis.metric`, then
    a column per run for each other eval accuracy / pass@k metric present (headed
    `<run> <metric>`; with the one metric only, by the run's name)."""
    points = [r.points(axis) for r in runs]
    metrics = [axis.metric]
    if axis.is_eval:
        present = {k for r in runs for row in r.rows for k in row if EXTRA_EVAL.match(k)}
        metrics += sorted(present - {axis.metric}, key=_metric_order)
    header = [axis.step_label]
    if len(metrics) == 1:
        header += [r.name for r in runs]
    else:
        header += [f"{r.name} {_short(m)}" for m in metrics for r in runs]
    steps = sorted({s for p in points for s in p})
    rows = [[str(s)] + [_num(p.get(s, {}).get(m)) for m in metrics for p in points] for s in steps]
    return header, rows


def best_table(runs: Sequence[Run], axis: Axis) -> tuple[list[str], list[list[str]]]:
    """Per run: how many points, the final and the best value, each with its step and
    the wall time it was reached at, and the loop's wall time (summary.json)."""
    step = axis.step_label
    header = ["run", "points", "final", f"at {step}", "at s", "best", f"at {step}", "at s"]
    header.append("loop s")
    rows = []
    for run in runs:
        curve = [(s, p[axis.metric], p) for s, p in run.points(axis).items() if axis.metric in p]
        row = [run.name, str(len(curve))]
        if curve:
            final = curve[-1]
            finite = [c for c in curve if math.isfinite(c[1])]
            best = max(finite, key=lambda c: c[1]) if finite else final
            for s, value, point in (final, best):
                row += [_num(value), str(s), _num(_elapsed(point, axis), 1)]
        else:
            row += [MISSING] * 6
        rows.append(row + [_num(run.summary.get("loop_s"), 1)])
    return header, rows


def aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell, the first left-aligned, the rest right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return [line(header), *map(line, rows)]


def report(runs: Sequence[Run], axis: Axis, note: str | None = None) -> str:
    """The printed comparison: runs, config differences, the curve table, final/best."""
    lines = [f"runs: {', '.join(f'{r.name} ({r.path})' for r in runs)}"]
    lines += [
        f"{r.name}: {r.skipped_lines} unreadable line(s) in metrics.jsonl skipped"
        for r in runs
        if r.skipped_lines
    ]
    lines += ["", *_diff_section(runs), ""]
    if note:
        lines.append(note)
    header, rows = curve_table(runs, axis)
    title = f"{axis.metric} by {axis.step_label}"
    if not axis.is_eval and len(rows) > MAX_TRAIN_ROWS:
        title += f" ({MAX_TRAIN_ROWS} of {len(rows)} steps shown)"
        rows = _thin(rows, MAX_TRAIN_ROWS)
    lines += [title, *aligned(header, rows), ""]
    lines += [f"final and best {axis.metric}", *aligned(*best_table(runs, axis))]
    return "\n".join(lines)


def _diff_section(runs: Sequence[Run]) -> list[str]:
    lines = [
        f"{r.name}: no config file, left out of the config diff" for r in runs if r.config is None
    ]
    with_config = [r for r in runs if r.config is not None]
    diff = config_diff(with_config)
    if len(with_config) < 2 or not diff:
        return [*lines, "config differences: none"]
    table = aligned(["key", *(r.name for r in with_config)], [[k, *v] for k, v in diff])
    return [*lines, f"config differences ({len(diff)} keys)", *table]


# --- the picture ------------------------------------------------------------------------


def figure(runs: Sequence[Run], axis: Axis, note: str | None = None) -> Any:
    """Two panels: the metric against step and against wall time, a line per run.
    `note` (why the metric is a fallback) goes under the title."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.6))
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    for run in runs:
        curve = [(s, p) for s, p in run.points(axis).items() if axis.metric in p]
        _line(by_step, [(s, p[axis.metric]) for s, p in curve], run.name)
        timed = [(_elapsed(p, axis), p[axis.metric]) for _, p in curve]
        _line(by_time, [(t, v) for t, v in timed if t is not None], run.name)
    step_what = "policy version (learner steps)" if axis.is_eval else "learner step"
    by_step.set(xlabel=step_what, ylabel=axis.metric)
    by_time.set(xlabel="seconds since the loop started")
    for ax in (by_step, by_time):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(axis.metric + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    return fig


def write_png(runs: Sequence[Run], axis: Axis, out: Path, note: str | None = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure(runs, axis, note).savefig(out, dpi=100)
    return out


def _line(ax: Any, points: list[tuple[float, float]], label: str) -> None:
    style = "o-" if len(points) <= MAX_MARKERS else "-"
    ax.plot([x for x, _ in points], [y for _, y in points], style, markersize=3, label=label)


# --- the command line ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument(
        "--metric", default=DEFAULT_METRIC, help=f"metric to compare (default {DEFAULT_METRIC})"
    )
    parser.add_argument("--out", default="compare.png", type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs)
    except NotARun as e:
        print(f"bench.compare: {e}", file=sys.stderr)
        return 2
    axis, note = choose_axis(runs, args.metric)
    print(report(runs, axis, note))
    print(f"\nwrote {write_png(runs, axis, args.out, note)}")
    return 0


def _carries(row: dict[str, float], axis: Axis) -> bool:
    """Whether `row` holds a point of `axis`: any eval/ metric for an eval axis (one
    evaluation may be spread over rows), else the metric itself."""
    if axis.is_eval:
        return any(k.startswith("eval/") for k in row)
    return axis.metric in row


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _short(metric: str) -> str:
    return metric.removeprefix("eval/")


def _metric_order(metric: str) -> tuple[int, str]:
    k = re.search(r"pass@(\d+)$", metric)
    return (int(k.group(1)) if k else -1, metric)


def _elapsed(point: dict[str, float], axis: Axis) -> float | None:
    return next((point[k] for k in axis.time_keys if k in point), None)


def _num(value: Any, digits: int = 3) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return MISSING
    return f"{value:.{digits}f}"


def _thin(rows: list[list[str]], keep: int) -> list[list[str]]:
    """`keep` rows evenly spaced, the first and the last among them."""
    idx = sorted({round(i * (len(rows) - 1) / (keep - 1)) for i in range(keep)})
    return [rows[i] for i in idx]


if __name__ == "__main__":
    sys.exit(main())
