"""bench/RESULTS.md and bench/plots/*.png from the benchmarks' JSON records.

`write_report(runs, names)` reads bench/results/<name>.json (bench.record) for
each benchmark and writes a header (machine, dates, library versions, git
commit: all taken from the records), a table of every goal with its verdict,
then one section per benchmark: its headline numbers, the ratios it measured
with "goal met" / "not met" where there is a goal, the command that reproduces
it and its plot (drawn by bench.charts). Ratios are recomputed here from the
raw numbers, so a table and its ratio always agree. A benchmark that failed,
left no JSON or left an incomplete one gets a line saying so and where its log
is, and is returned in the list of failures. Nothing here runs a benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import async_vs_sync, charts, peer
from bench.record import ROOT, environment, read_json

RESULTS_DIR = ROOT / "bench" / "results"
BASELINE = "baseline"
"""Under the results dir: earlier records kept to compare against (bench/results/baseline/)."""
OUT = ROOT / "bench" / "RESULTS.md"


@dataclass(frozen=True)
class Goal:
    """A measured ratio and the bound it should meet (`op` is ">=" or "<=")."""

    measure: str
    value: float
    op: str
    target: float

    @property
    def met(self) -> bool | None:
        if not _finite(self.value):
            return None
        return self.value >= self.target if self.op == ">=" else self.value <= self.target

    @property
    def verdict(self) -> str:
        return {True: "goal met", False: "not met", None: "n/a"}[self.met]

    def row(self) -> list[str]:
        return [self.measure, f"{_num(self.value)}x", f"{self.op} {self.target:g}x", self.verdict]


@dataclass
class Rendered:
    """A benchmark's section body and the goals it measured."""

    lines: list[str]
    goals: list[Goal] = field(default_factory=list)


@dataclass(frozen=True)
class Section:
    title: str
    about: str
    render: Callable[[dict[str, Any]], Rendered]
    plot: Callable[[dict[str, Any], Path], None] | None
    module: str = ""
    """The bench module that wrote the record, when not the record's own name."""


def write_report(
    runs: dict[str, dict],
    names: list[str],
    results_dir: Path = RESULTS_DIR,
    out: Path = OUT,
) -> list[str]:
    """Write `out` (RESULTS.md) and its plots (plots/ beside it) from the records
    of `names` in `results_dir`; `runs` is bench.run_all's status per benchmark.
    Returns the names of the benchmarks that failed or left no usable results."""
    out = Path(out)
    records = {name: read_json(Path(results_dir) / f"{name}.json") for name in names}
    baselines = {name: read_json(Path(results_dir) / BASELINE / f"{name}.json") for name in names}
    body: list[str] = []
    goals: list[tuple[str, Goal]] = []
    failed: list[str] = []
    for name in names:
        run = runs.get(name, {})
        lines, found, ok = _section(name, run, records[name], out.parent, baselines[name])
        body += lines
        goals += [(name, goal) for goal in found]
        if not ok:
            failed.append(name)
    usable = {n: r for n, r in records.items() if r is not None and n not in failed}
    text = _header(usable, goals, failed) + body
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text).rstrip() + "\n")
    return failed


def _section(
    name: str, run: dict, record: dict | None, base: Path, baseline: dict | None = None
) -> tuple[list[str], list[Goal], bool]:
    """(markdown lines, goals, whether the benchmark has usable results); `baseline`:
    an earlier record of the same benchmark to set this one's accounting against."""
    spec = SECTIONS.get(name) or Section(name, "", _generic, None)
    head = [f"## {spec.title}", ""]
    plot = base / "plots" / f"{name}.png"
    status = run.get("status", "ok" if record is not None else "failed: no results")
    problem = None
    if not status.startswith("ok"):
        problem = status
    elif record is None:
        problem = "failed: no results (no JSON record)"
    else:
        try:
            rendered = spec.render(record["results"])
            rendered.lines += _before_after(record, baseline)
            if spec.plot is not None:
                spec.plot(record["results"], plot)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
            problem = f"failed: its results are incomplete ({type(error).__name__}: {error})"
    if problem is not None:
        plot.unlink(missing_ok=True)  # never show a picture of an older run
        log = run.get("log", f"bench/results/{name}.log")
        return head + [f"**{problem}.** Log: `{log}`.", ""], [], False
    lines = [*head, spec.about, "", _provenance(record), "", *rendered.lines, ""]
    if rendered.goals:
        lines += _table(["ratio", "measured", "goal", ""], [g.row() for g in rendered.goals])
        lines.append("")
    lines += ["Reproduce:", "", "```", _command(name, run, record), "```", ""]
    if spec.plot is not None:
        lines += [f"![{name}](plots/{name}.png)", ""]
    return lines, rendered.goals, True


def _header(
    records: dict[str, dict], goals: list[tuple[str, Goal]], failed: list[str]
) -> list[str]:
    env, env_note = _environment(records)
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    machine = (
        f"{env.get('cpu', '?')}, {env.get('logical_cores', '?')} cores "
        f"({env.get('physical_cores', '?')} physical), {_num(env.get('ram_gib'), 1)} GiB RAM, "
        f"{env.get('os', '?')}"
    )
    started = sorted(r["started"] for r in records.values() if "started" in r)
    ran = f"{started[0]} to {started[-1]}" if started else "n/a"
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (bench/run_all.py, then bench/report.py); "
        "`python -m bench.run_all --report-only` rewrites it from bench/results/*.json.",
        "",
        *_table(
            ["", ""],
            [
                ["Machine", machine + env_note],
                ["Date", f"benchmarks started {ran}; report written {_now()}"],
                ["Versions", versions or "n/a"],
                ["Git commit", _commits(records)],
            ],
        ),
        "",
        "## Goals",
        "",
    ]
    rows = [[name, *goal.row()] for name, goal in goals]
    lines += _table(["benchmark", "ratio", "measured", "goal", ""], rows) if rows else ["none"]
    lines.append("")
    if failed:
        lines += [f"**Failed: {', '.join(failed)}** (see their sections for the logs).", ""]
    return lines


def _environment(records: dict[str, dict]) -> tuple[dict[str, Any], str]:
    """The newest record's machine and versions, else this machine's now."""
    recorded = [r for r in records.values() if "environment" in r]
    if recorded:
        return max(recorded, key=lambda r: r.get("started", ""))["environment"], ""
    return environment(), " (read when the report was written: the records carry none)"


def _commits(records: dict[str, dict]) -> str:
    """The commit the records were made at, or each one with its benchmarks."""
    by_commit: dict[str, list[str]] = {}
    for name, record in records.items():
        commit = record.get("commit", "unknown")[:12]
        label = commit + (" (uncommitted changes)" if record.get("dirty") else "")
        by_commit.setdefault(label, []).append(name)
    if len(by_commit) <= 1:
        return next(iter(by_commit), "n/a")
    return "; ".join(f"{label}: {', '.join(names)}" for label, names in by_commit.items())


def _provenance(record: dict) -> str:
    dirty = " (uncommitted changes)" if record.get("dirty") else ""
    return (
        f"Ran {record.get('started', '?')} for {_num(record.get('seconds'), 0)}s "
        f"at commit {record.get('commit', 'unknown')[:12]}{dirty}."
    )


def _command(name: str, run: dict, record: dict) -> str:
    if run.get("command"):
        return run["command"]
    module = SECTIONS[name].module if name in SECTIONS else ""
    return " ".join(["python", "-m", f"bench.{module or name}", *record.get("argv", [])])


def _weight_sync(r: dict[str, Any]) -> Rendered:
    sizes = sorted(r["sizes"].items(), key=lambda kv: kv[1]["bytes"])
    rows, goals = [], []
    for name, s in sizes:
        over = _ratio(s["pause_s"], s["floor_s"])
        rows.append(
            [
                name,
                _num(s["bytes"] / 1e6, 1),
                _num(s["parameters"] / 1e6, 1),
                _num(s["pause_s"], 3),
                _num(s["load_s"], 3),
                _num(s["export_s"], 3),
                _num(s["stall_s"], 3),
                _num(s["floor_s"], 3),
                f"{_num(over)}x",
                f"{_num(_ratio(s['export_s'] + s['pause_s'], s['floor_s']))}x",
            ]
        )
        goals.append(
            Goal(f"pause / shm floor, {name} ({_num(s['bytes'] / 1e6, 0)} MB)", over, "<=", 2)
        )
    header = ["size", "MB", "M params", "pause s", "load s", "export s", "stall s", "floor s"]
    lines = _table([*header, "pause / floor", "(export + pause) / floor"], rows)
    return Rendered([f"Medians of {r['updates']} updates per size.", "", *lines], goals)


def _cross_node_sync(r: dict[str, Any]) -> Rendered:
    sizes = sorted(r["sizes"].items(), key=lambda kv: kv[1]["bytes"])
    rows = [
        [
            name,
            _num(s["bytes"] / 1e6, 1),
            f"{_num(s['pause_far_over_near'])}x",
            f"{_num(s['far_total_over_near_pause'])}x",
            _num(s["near_pause_s"], 3),
            _num(s["far_pause_s"], 3),
            _num(s["fetch_s"], 3),
            _num(s["put_s"], 3),
        ]
        for name, s in sizes
    ]
    header = ["size", "MB", "pause far / near", "(put + fetch + pause) far / near pause"]
    lines = _table([*header, "near pause s", "far pause s", "fetch s", "put s"], rows)
    return Rendered([f"Medians of {r['updates']} updates per size.", "", *lines])


PEER_SPEED_GOALS = {"tiny": 1.2, "larger": 2.0}
"""asyncrl / TRL samples/s that issue 18 asks for, per bench.peer case."""


def _peer(r: dict[str, Any]) -> Rendered:
    case = r["case"]
    rows = [
        [
            name,
            _num(s["samples_per_s"], 1),
            _num(s["step_s"], 2),
            _num(s["startup_s"], 1),
            _num(s["shutdown_s"], 1),
            _num(s["process_s"], 1),
            peer.reward_cell(s),
            _num(s["held_out_accuracy"], 2),
        ]
        for name, s in r["sides"].items()
    ]
    header = ["side", "samples/s", "s/step", "start-up s", "shut-down s", "process s"]
    lines = _table([*header, "reward at equal loop time", "held-out accuracy"], rows)
    trl = r["sides"]["trl"]
    goals = []
    faster = PEER_SPEED_GOALS.get(case["name"], 1.2)
    for name, s in r["sides"].items():
        if name not in ("asyncrl_sync", "asyncrl_async"):  # TRL itself, reference runs
            continue
        label = f"{name} / TRL {{}}, {case['name']} case"
        speed = _ratio(s["samples_per_s"], trl["samples_per_s"])
        goals.append(Goal(label.format("samples/s"), speed, ">=", faster))
        if case["name"] == "tiny":  # issue 18 asks these of the tiny case
            wall = _ratio(s["process_s"], trl["process_s"])
            goals.append(Goal(label.format("process time"), wall, "<=", 1.0))
            if _finite(s["reward_at_equal_time"]) and _finite(trl["reward_at_equal_time"]):
                reward = _ratio(s["reward_at_equal_time"], trl["reward_at_equal_time"])
                goals.append(Goal(label.format("reward at equal loop time"), reward, ">=", 1.0))
    if {"asyncrl_sync", "asyncrl_async"} <= set(r["sides"]):  # issue 18: async never loses
        sync, overlap = r["sides"]["asyncrl_sync"], r["sides"]["asyncrl_async"]
        speed = _ratio(overlap["samples_per_s"], sync["samples_per_s"])
        label = f"asyncrl_async / asyncrl_sync samples/s, {case['name']} case"
        goals.append(Goal(label, speed, ">=", 1.0))
    intro = (
        f"{peer.describe(case)}; {peer.equal_time_phrase(r)}; held-out greedy accuracy of "
        f"the start policy {_num(r['held_out_start_accuracy'], 2)}."
    )
    return Rendered([intro, "", *lines, *_accounting(r["sides"])], goals)


ACCOUNTING_ROWS = {
    "perf/step_s": "step, wall s",
    "perf/learner_wait_s": "learner waits for its batch, s",
    "perf/learner_step_s": "learner step, s",
    "perf/learner_borrowed_s": "of which on the engines' borrowed cores, s",
    "sync/pause_s": "weight-sync pause, s",
    "perf/cpu_s/learner": "CPU s: learner",
    "perf/cpu_s/rollout": "CPU s: rollout workers and engines",
    "perf/cpu_s/env": "CPU s: env pools",
    "perf/cpu_s/driver": "CPU s: driver",
    "perf/cpu_s/ray": "CPU s: Ray",
    "perf/cpu_busy": "share of the cores busy",
}


def _accounting(sides: dict[str, Any]) -> list[str]:
    """Where an asyncrl step's wall time and CPU seconds go, per side that logged it."""
    accounted = {n: s["accounting"] for n, s in sides.items() if s.get("accounting")}
    if not accounted:
        return []
    rows = [
        [label, *[_num(a.get(key), 3) if key in a else "n/a" for a in accounted.values()]]
        for key, label in ACCOUNTING_ROWS.items()
    ]
    intro = "Where a step goes (each run's own perf/* metrics, mean over steps after the first):"
    return ["", intro, "", *_table(["", *accounted], rows)]


def _before_after(record: dict, baseline: dict | None) -> list[str]:
    """The accounting of each asyncrl mode in an earlier record of this benchmark
    (`baseline`) beside this record's, with each side's speed and process time
    against TRL's in its own run (absolute rates move between days on a shared host)."""
    if baseline is None:
        return []
    before, after = baseline["results"]["sides"], record["results"]["sides"]
    modes = [m for m in ("asyncrl_sync", "asyncrl_async") if m in before and m in after]
    modes = [m for m in modes if before[m].get("accounting") and after[m].get("accounting")]
    if not modes or "trl" not in before or "trl" not in after:
        return []
    columns = [(sides, m) for m in modes for sides in (before, after)]

    def against_trl(key: str) -> list[str]:
        return [f"{_num(_ratio(s[m][key], s['trl'][key]))}x" for s, m in columns]

    rows = [
        [
            "TRL's step in the same run, s (the day's speed)",
            *[_num(s["trl"]["step_s"], 3) for s, _ in columns],
        ],
        ["samples/s / TRL's, same run", *against_trl("samples_per_s")],
        ["process time / TRL's, same run", *against_trl("process_s")],
        *[
            [label, *[_num(s[m]["accounting"].get(key), 3) for s, m in columns]]
            for key, label in ACCOUNTING_ROWS.items()
        ],
    ]
    intro = (
        f"Before and after, each mode: the run at commit {baseline['commit'][:7]} "
        f"({baseline['started']}, bench/results/{BASELINE}/) against this one."
    )
    header = ["", *[f"{m} {when}" for m in modes for when in ("before", "after")]]
    return ["", intro, "", *_table(header, rows)]


def _envs(r: dict[str, Any]) -> Rendered:
    scales = sorted(r["scales"], key=lambda s: s["episodes"])
    base = scales[0]["episodes_per_s"]
    rows = [
        [
            _num(s["episodes"], 0),
            _num(s["episodes_per_s"], 0),
            f"{_num(_ratio(s['episodes_per_s'], base))}x",
            _num(s["cpu_ms_per_turn"]),
            f"{_num(s['env_step_ms_p50'], 1)} / {_num(s['env_step_ms_p99'], 1)}",
            f"{_num(s['round_trip_ms_p50'], 1)} / {_num(s['round_trip_ms_p99'], 1)}",
            _num(s["memory_kib_per_episode"], 0),
            f"{_num(100 * s['scored'], 1)}%",
        ]
        for s in scales
    ]
    header = ["concurrent episodes", "episodes/s", "x smallest", "CPU ms/turn"]
    header += ["env step p50 / p99 ms", "round trip p50 / p99 ms", "KiB/episode", "scored"]
    return Rendered([f"{r['pools']} env pools.", "", *_table(header, rows)])


def _learner(r: dict[str, Any]) -> Rendered:
    rates = r["tokens_per_s"]
    rows = [
        [p, _num(rate, 0), f"{_num(_ratio(rate, rates['fp32']))}x"] for p, rate in rates.items()
    ]
    lines = [
        f"{r['steps']} timed steps per precision.",
        "",
        *_table(["precision", "tokens/s", "x fp32"], rows),
    ]
    if "fp8" in rates and "bf16" in rates:
        lines += ["", f"fp8 / bf16: {_num(_ratio(rates['fp8'], rates['bf16']))}x."]
    return Rendered(lines)


def _rollout(r: dict[str, Any]) -> Rendered:
    agent, raw = r["agent_tokens_per_s"], r["raw_tokens_per_s"]
    rows = [
        ["agent loop tokens/s", _num(agent, 0)],
        ["raw vLLM tokens/s, same turn order", _num(raw, 0)],
        ["raw vLLM tokens/s, all turns at once", _num(r["raw_burst_tokens_per_s"], 0)],
    ]
    goals = [Goal("agent loop / raw vLLM throughput", _ratio(agent, raw), ">=", 0.9)]
    for n in (1, 8):
        on, off = r[f"spec_on_tokens_per_s_{n}"], r[f"spec_off_tokens_per_s_{n}"]
        rows.append(
            [f"ngram spec on / off tokens/s, {n} in flight", f"{_num(on, 0)} / {_num(off, 0)}"]
        )
        goals.append(Goal(f"ngram spec on / off, {n} in flight", _ratio(on, off), ">=", 1.5))
    rows.append(
        [
            "ngram acceptance rate / mean accepted length",
            f"{_num(r['spec_acceptance_rate'])} / {_num(r['spec_mean_accepted_length'])}",
        ]
    )
    if "spec_verify_over_decode_step_1" in r:  # results from before it was measured lack it
        rows.append(
            [
                "ngram drafting step / plain decode step, 1 in flight (the verify cost)",
                f"{_num(r['spec_verify_over_decode_step_1'])}x",
            ]
        )
    for key, label in (("router", "router"), ("round_robin", "round robin")):
        skew, makespan = r[f"placement_skew_{key}"], r[f"placement_makespan_s_{key}"]
        rows.append([f"placement skew / makespan, {label}", f"{_num(skew)} / {_num(makespan, 1)}s"])
    slower = _ratio(r["placement_makespan_s_round_robin"], r["placement_makespan_s_router"])
    rows.append(["makespan round robin / router", f"{_num(slower)}x"])
    return Rendered([f"{r['episodes']} episodes.", "", *_table(["", ""], rows)], goals)


def _async_vs_sync(r: dict[str, Any]) -> Rendered:
    names = [name for name in ASYNC_RUNS if name in r]
    measures = [
        ("wall time of the training loop, s", "wall_s", 1),
        ("reward, last fifth of the steps", "reward_last_fifth", 3),
        (f"reward at equal wall time ({_num(r['equal_wall_s'], 0)}s)", "reward_at_equal_wall", 3),
        ("steps done by equal wall time", "steps_by_equal_wall", 0),
        ("mean step, s", "step_s_mean", 2),
        ("mean learner step, s", "learner_step_s_mean", 2),
        ("mean learner wait, s", "learner_wait_s_mean", 2),
        ("mean weight-sync pause, s", "sync_pause_s_mean", 3),
        ("mean rollout tokens/s", "rollout_tokens_per_s_mean", 0),
        ("peak memory, GiB", "peak_memory_gib", 2),
    ]
    rows = [[label, *(_num(r[name][key], d) for name in names)] for label, key, d in measures]
    served_by_run = r["served_staleness_by_run"]
    served = [
        f"{_run_label(name, r)}: "
        + (", ".join(f"{k} behind: {v}" for k, v in sorted(counts.items())) or "n/a")
        for name, counts in served_by_run.items()
    ]
    workers = r.get("workers", 2)  # records before --workers ran two
    lines = [
        f"{r['steps']} steps each, tool latency {r['tool_latency_s']}s"
        + _slow_calls(r)
        + f", {workers} rollout worker{'s' if workers > 1 else ''}.",
        "",
        *_table(["", *(_run_label(name, r) for name in names)], rows),
        "",
        f"Groups the async learners were served, by staleness: {'; '.join(served)}.",
    ]
    goals = [
        Goal(
            f"speed-up over sync, {_run_label(name, r)}",
            _ratio(r["sync"]["wall_s"], r[name]["wall_s"]),
            ">=",
            async_vs_sync.SPEEDUP_GOAL,
        )
        for name in names
        if name != "sync"
    ]
    return Rendered(lines, goals)


ASYNC_RUNS = ("sync", "async", "async_wide")


def _run_label(name: str, r: dict[str, Any]) -> str:
    if name == "sync":
        return name
    staleness = r.get("max_staleness_by_run", {}).get(name, "?")
    return f"async, max_staleness {staleness}"


def _slow_calls(r: dict[str, Any]) -> str:
    rate = r.get("tool_slow_rate", 0.0)
    return f", {rate:.0%} of calls {r['tool_slow_latency_s']}s" if rate else ""


def _memory(r: dict[str, Any]) -> Rendered:
    rows = [
        [
            "peak PSS of the process tree",
            f"{_num(r['peak_pss_gib'])} GiB at {_num(r['peak_t_s'], 0)}s",
        ],
        ["RSS sum at that moment", f"{_num(r['peak_rss_sum_gib'])} GiB"],
        ["the run's own per-step peak", f"{_num(r['run_peak_memory_gib'])} GiB"],
        ["processes at the peak", str(r["processes_at_peak"])],
        ["wall time with start-up", f"{_num(r['wall_s'], 0)}s"],
    ]
    top = sorted(r["by_process_gib"].items(), key=lambda kv: -kv[1])[:8]
    lines = [
        f"`python {' '.join(r['command'])}`, its process tree sampled.",
        "",
        *_table(["", ""], rows),
        "",
        "Largest processes at the peak (PSS):",
        "",
        *_table(["process", "GiB"], [[name, _num(gib)] for name, gib in top]),
    ]
    return Rendered(lines)


def _generic(r: dict[str, Any]) -> Rendered:
    rows = [[k, _num(v) if isinstance(v, int | float) else str(v)] for k, v in r.items()]
    return Rendered(_table(["", ""], [row for row in rows if len(row[1]) < 80]))


SECTIONS = {
    "weight_sync": Section(
        "Weight sync",
        "The pause a weight update causes (vLLM pause, shm load, resume) against a plain "
        "shared-memory copy of the same bytes (the floor); stall: the longest gap between "
        "tokens of a request streaming across the update.",
        _weight_sync,
        charts.weight_sync,
    ),
    "cross_node_sync": Section(
        "Weight sync across nodes",
        "Two Ray nodes on this machine, a vLLM rollout worker on each: the pause of the one on "
        "the node where the weights are written (shared memory, read in place) against the "
        "one on the other node (Ray's object store, staged into its node's shared memory "
        "before the pause), same updates.",
        _cross_node_sync,
        None,
    ),
    "envs": Section(
        "Env pools",
        "Concurrent calculator episodes through the real agent loop and env pools against a "
        "policy that answers instantly: env and loop overhead only (latencies include queueing).",
        _envs,
        charts.envs,
    ),
    "learner": Section(
        "Learner",
        "Training tokens/s of a 1-rank DeepSpeed learner per precision on the same batches "
        "(on a CPU float8 matmuls are emulated: fp8 is for the record).",
        _learner,
        charts.learner,
    ),
    "rollout": Section(
        "Rollout",
        "Agent-loop generation against raw vLLM on the same turn prompts, ngram speculation "
        "on/off, and router vs round-robin placement over two engines.",
        _rollout,
        charts.rollout,
    ),
    "async_vs_sync": Section(
        "Async vs sync",
        "The default agentic workload trained in sync mode, then in async mode, same steps "
        "and seed; wall time excludes start-up.",
        _async_vs_sync,
        charts.async_vs_sync,
    ),
    "peer": Section(
        "Peer: TRL's GRPOTrainer",
        "TRL 1.16's GRPOTrainer (CPU, no vLLM) and asyncrl in sync and async mode on the same "
        "start policy and one-turn calculator task with matched hyper-parameters "
        "(bench/peer.py says which); each side in its own process.",
        _peer,
        charts.peer,
    ),
    "peer_larger": Section(
        "Peer: TRL's GRPOTrainer, larger case",
        "The same comparison with a ~30M-parameter Qwen3 built from config (random "
        "weights: its reward says nothing, its speed does) and up to 256 new tokens.",
        _peer,
        charts.peer,
        module="peer",
    ),
    "peer_agentic": Section(
        "Peer: TRL's GRPOTrainer, agentic case",
        "The default workload's multi-turn calculator task with a 0.5 s tool, TRL running "
        "it through its own tool loop (`GRPOTrainer(tools=[calculator])`, tools called one "
        "sample at a time), asyncrl through its agent loop and env pools; the tiny policy, "
        "whose greedy answers skip the tool at the start. Held-out accuracy runs every "
        "episode to its end, tool calls answered. bench/peer.py lists what differs.",
        _peer,
        charts.peer,
        module="peer",
    ),
    "memory": Section(
        "Memory",
        "Peak memory (PSS, shared pages counted once) of a short default run's whole process "
        "tree: driver, Ray, actors, vLLM engines.",
        _memory,
        charts.memory,
    ),
}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and value == value and abs(value) != float("inf")


def _num(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "n/a"


def _ratio(a: Any, b: Any) -> float:
    return a / b if _finite(a) and _finite(b) and b != 0 else float("nan")


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
