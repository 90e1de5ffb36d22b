"""The report's plots: one PNG per benchmark, drawn from the `results` part of
its JSON record (bench.record).

Each function takes those results and a path and writes the picture; which
numbers are headline numbers and whether a goal is met is bench.report's
business, not this module's. Drawn with matplotlib's object API (a `Figure`,
no pyplot): no display, no global backend state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

PAUSE_GOAL = 2.0
"""Weight-sync pause / shared-memory copy floor (drawn as a dashed line)."""


def async_vs_sync(results: dict[str, Any], path: Path) -> None:
    """Reward against wall time for the sync and async runs."""
    fig, ax = _figure()
    staleness = results.get("max_staleness_by_run", {})
    for name, style in zip(("sync", "async", "async_wide"), ("o-", "s-", "^-"), strict=True):
        if name in results:
            label = f"async, max_staleness {staleness.get(name, '?')}" if name != "sync" else name
            run = results[name]
            ax.plot(run["elapsed_s"], run["reward"], style, markersize=3, label=label)
    ax.axvline(results["equal_wall_s"], color="grey", linestyle=":", label="equal wall time")
    ax.set(xlabel="wall time of the training loop (s)", ylabel="mean reward of the step")
    ax.set_title("async vs sync: reward over wall time")
    ax.legend()
    _save(fig, path)


def weight_sync(results: dict[str, Any], path: Path) -> None:
    """Pause (and export + pause) against model size, with the shm copy floor."""
    sizes = sorted(results["sizes"].items(), key=lambda kv: kv[1]["bytes"])
    mb = [s["bytes"] / 1e6 for _, s in sizes]
    floor = [s["floor_s"] for _, s in sizes]
    fig, ax = _figure()
    ax.plot(mb, [s["pause_s"] for _, s in sizes], "o-", label="pause (sync/pause_s)")
    ax.plot(mb, [s["export_s"] + s["pause_s"] for _, s in sizes], "^-", label="export + pause")
    ax.plot(mb, floor, "s-", color="black", label="shared-memory copy floor")
    ax.plot(mb, [PAUSE_GOAL * f for f in floor], "k--", label=f"goal: {PAUSE_GOAL:g}x floor")
    for (name, _), x, y in zip(sizes, mb, floor, strict=True):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel="weights (MB)", ylabel="seconds")
    ax.set_title("weight sync: pause vs model size")
    ax.legend()
    _save(fig, path)


def envs(results: dict[str, Any], path: Path) -> None:
    """Episodes/s against the number of concurrent episodes."""
    scales = sorted(results["scales"], key=lambda s: s["episodes"])
    fig, ax = _figure()
    ax.plot([s["episodes"] for s in scales], [s["episodes_per_s"] for s in scales], "o-")
    ax.set(xscale="log", xlabel="concurrent episodes", ylabel="episodes/s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"env pools: throughput vs concurrency ({results['pools']} pools)")
    _save(fig, path)


def learner(results: dict[str, Any], path: Path) -> None:
    """Training tokens/s per precision, labelled with the ratio to fp32."""
    rates = results["tokens_per_s"]
    fig, ax = _figure()
    bars = ax.bar(list(rates), list(rates.values()))
    base = rates.get("fp32")
    if base:
        ax.bar_label(bars, labels=[f"{r / base:.2f}x fp32" for r in rates.values()])
    ax.set(xlabel="precision", ylabel="training tokens/s")
    ax.set_title("learner: tokens/s per precision")
    _save(fig, path)


def rollout(results: dict[str, Any], path: Path) -> None:
    """Generated tokens/s: agent loop vs raw vLLM, and ngram speculation on/off."""
    bars = {
        "agent loop": results["agent_tokens_per_s"],
        "raw vLLM": results["raw_tokens_per_s"],
        "raw, burst": results["raw_burst_tokens_per_s"],
        "spec off\n1 in flight": results["spec_off_tokens_per_s_1"],
        "spec on\n1 in flight": results["spec_on_tokens_per_s_1"],
        "spec off\n8 in flight": results["spec_off_tokens_per_s_8"],
        "spec on\n8 in flight": results["spec_on_tokens_per_s_8"],
    }
    fig, ax = _figure(width=8)
    colors = ["C0", "C1", "C1", "C2", "C3", "C2", "C3"]
    ax.bar(list(bars), list(bars.values()), color=colors)
    ax.set(ylabel="generated tokens/s")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title("rollout: agent loop vs raw vLLM; ngram speculation")
    _save(fig, path)


def peer(results: dict[str, Any], path: Path) -> None:
    """Each side's reward per step against the training loop's time and against the
    process's (start-up included), the peer comparison's two clocks. A step sits at
    its end time, averaged over seeds (`step_end_s`); a record without it spaces the
    steps at the side's mean step time, and the title says so."""
    fig = Figure(figsize=(10, 4.2))
    by_loop, by_process = fig.subplots(1, 2, sharey=True)
    spaced = False
    for name, side in results["sides"].items():
        ends = side.get("step_end_s")
        if ends is None:
            spaced = True
            step = side["loop_s"] / len(side["rewards"])
            ends = [step * (i + 1) for i in range(len(side["rewards"]))]
        points = [(t, r) for t, r in zip(ends, side["rewards"], strict=False) if r is not None]
        if not points:
            continue  # a side that logs no reward (TRL's tool loop in the agentic case)
        times, rewards = zip(*points, strict=True)
        by_loop.plot(times, rewards, "-", linewidth=1, label=name)
        by_process.plot([side["startup_s"] + t for t in times], rewards, "-", linewidth=1)
    by_loop.axvline(
        results["equal_loop_time_s"], color="grey", linestyle=":", label="equal loop time"
    )
    by_loop.set(xlabel="training loop time (s)", ylabel="mean reward of the step")
    by_process.set(xlabel="process time, start-up included (s)")
    for ax in (by_loop, by_process):
        ax.grid(True, alpha=0.3)
    by_loop.legend(fontsize=8)
    case = results["case"]
    seeds = results.get("seeds", 1)
    fig.suptitle(
        f"peer, {case['name']} case: reward over time, mean of {seeds} seed(s)"
        + (" (steps spaced at each side's mean step time)" if spaced else "")
    )
    _save(fig, path)


def memory(results: dict[str, Any], path: Path) -> None:
    """PSS of the run's process tree over time, the peak marked."""
    fig, ax = _figure()
    ax.plot(results["curve_t_s"], results["curve_pss_gib"], label="PSS of the process tree")
    ax.plot([results["peak_t_s"]], [results["peak_pss_gib"]], "rv", label="peak", markersize=8)
    ax.axhline(results["run_peak_memory_gib"], color="grey", linestyle=":", label="run's own peak")
    ax.set(xlabel="seconds since launch", ylabel="GiB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"memory: {results['steps']}-step default run")
    ax.legend()
    _save(fig, path)


def _figure(width: float = 6.4) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, 4.2))
    ax = fig.subplots()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
