"""bench.report on synthetic records: ratios, goal verdicts, failures, plots.
Nothing is benchmarked; the records are written by hand into a temp dir."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.async_vs_sync import reward_at
from bench.report import write_report
from bench.run_all import BENCHES

NAMES = [b.name for b in BENCHES]
ENV = {
    "cpu": "Test CPU 9000",
    "logical_cores": 2,
    "physical_cores": 1,
    "ram_gib": 16.0,
    "os": "Linux-test",
    "versions": {"python": "3.11.7", "torch": "2.13.0", "vllm": "0.32.0"},
}


def _size(mb: float, pause: float, floor: float) -> dict:
    return {
        "bytes": mb * 1e6,
        "parameters": mb * 1e6 / 4,
        "pause_s": pause,
        "load_s": pause / 2,
        "export_s": 0.01,
        "stall_s": pause * 1.1,
        "floor_s": floor,
    }


def _scale(episodes: int, per_s: float) -> dict:
    return {
        "episodes": float(episodes),
        "episodes_per_s": per_s,
        "cpu_ms_per_turn": 0.5,
        "env_step_ms_p50": 1.0,
        "env_step_ms_p99": float("nan"),
        "round_trip_ms_p50": 2.0,
        "round_trip_ms_p99": 9.0,
        "memory_kib_per_episode": 12.0,
        "scored": 0.99,
    }


def _run(wall: float, rewards: list[float]) -> dict:
    n = len(rewards)
    return {
        "wall_s": wall,
        "reward_last_fifth": rewards[-1],
        "reward_at_equal_wall": rewards[-1],
        "steps_by_equal_wall": n,
        "step_s_mean": wall / n,
        "learner_step_s_mean": 0.5,
        "learner_wait_s_mean": 0.1,
        "sync_pause_s_mean": 0.02,
        "export_s_mean": 0.01,
        "rollout_tokens_per_s_mean": 300.0,
        "peak_memory_gib": 3.0,
        "elapsed_s": [wall * (i + 1) / n for i in range(n)],
        "reward": rewards,
    }


RESULTS = {
    "weight_sync": {
        "updates": 3,
        # 1.5x (met), 2.5x (not met), 1.9x (met)
        "sizes": {
            "small": _size(4, 0.03, 0.02),
            "medium": _size(43, 0.25, 0.1),
            "large": _size(390, 1.9, 1.0),
        },
    },
    "cross_node_sync": {
        "updates": 3,
        "sizes": {
            "small": {
                "bytes": 4e6,
                "near_pause_s": 0.05,
                "far_pause_s": 0.05,
                "fetch_s": 0.025,
                "put_s": 0.005,
                "pause_far_over_near": 1.0,
                "far_total_over_near_pause": 1.6,
            },
        },
    },
    "peer": {  # pooled over seeds (bench.peer --seeds 3)
        "case": {"name": "tiny", "max_new_tokens": 20, "steps": 60},
        "seeds": 3,
        "equal_loop_time_s": 66.0,
        "held_out_start_accuracy": 0.05,
        "sides": {
            name: {
                "samples_per_s": rate,
                "step_s": 1.0,
                "startup_s": 9.0,
                "shutdown_s": 0.0,
                "process_s": wall,
                "reward_at_equal_time": reward,
                "reward_at_equal_time_se": se,
                "held_out_accuracy": 0.1,
                "loop_s": 66.0,
                "rewards": [0.1, None, 0.2],
                **({"step_end_s": [20.0, 40.0, 66.0]} if name == "trl" else {}),
            }
            for name, rate, wall, reward, se in (
                ("trl", 100.0, 80.0, 0.2, 0.004),
                ("asyncrl_async", 130.0, 70.0, 0.18, 0.012),
            )
        },
        "ratios": {},
    },
    "peer_larger": {
        "case": {"name": "larger", "max_new_tokens": 256, "steps": 4},
        "equal_loop_time_s": 300.0,
        "held_out_start_accuracy": 0.0,
        "sides": {
            name: {
                "samples_per_s": rate,
                "step_s": 100.0,
                "startup_s": 9.0,
                "shutdown_s": 0.0,
                "process_s": 400.0,
                "reward_at_equal_time": 0.0,
                "held_out_accuracy": 0.0,
                "loop_s": 400.0,
                "rewards": [0.0] * 4,
                "accounting": {}
                if name == "trl"
                else {"perf/step_s": 100 / rate, "perf/cpu_busy": 0.5},
            }
            for name, rate in (("trl", 1.0), ("asyncrl_sync", 2.0), ("asyncrl_async", 1.6))
        },
        "ratios": {},
    },
    "peer_agentic": {
        "case": {
            "name": "agentic",
            "max_new_tokens": 48,
            "steps": 10,
            "env": {"id": "calc", "kwargs": {"max_turns": 3, "tool_latency_s": 0.5}},
        },
        "equal_loop_time_s": 30.0,
        "held_out_start_accuracy": 0.0,
        "sides": {
            name: {
                "samples_per_s": rate,
                "step_s": 128 / rate,
                "startup_s": 9.0,
                "shutdown_s": 0.0,
                "process_s": 100.0,
                "reward_at_equal_time": 0.5,
                "held_out_accuracy": 0.0,
                "loop_s": 1280 / rate,
                "rewards": [None] * 10 if name == "trl" else [0.5] * 10,  # TRL's tool loop
            }
            for name, rate in (("trl", 4.0), ("asyncrl_sync", 30.0), ("asyncrl_async", 36.0))
        },
        "ratios": {},
    },
    "envs": {
        "pools": 2,
        "scales": [_scale(1000, 500.0), _scale(4000, 1000.0), _scale(10000, 1500.0)],
    },
    "learner": {
        "model": "tiny",
        "steps": 4,
        "tokens_per_s": {"fp32": 1000.0, "bf16": 500.0, "fp8": 250.0},
    },
    "rollout": {
        "model": "tiny",
        "episodes": 32,
        "agent_tokens_per_s": 95.0,
        "raw_tokens_per_s": 100.0,
        "raw_burst_tokens_per_s": 150.0,
        "spec_on_tokens_per_s_1": 30.0,
        "spec_off_tokens_per_s_1": 20.0,
        "spec_on_tokens_per_s_8": 50.0,
        "spec_off_tokens_per_s_8": 50.0,
        "spec_acceptance_rate": 0.6,
        "spec_mean_accepted_length": 2.2,
        "placement_skew_router": 1.05,
        "placement_makespan_s_router": 10.0,
        "placement_skew_round_robin": 1.4,
        "placement_makespan_s_round_robin": 13.0,
    },
    "async_vs_sync": {
        "steps": 5,
        "tool_latency_s": 0.5,
        "overrides": [],
        "tool_slow_rate": 0.1,
        "tool_slow_latency_s": 4.0,
        "wide_staleness": 4,
        "workers": 1,
        "max_staleness_by_run": {"sync": 1, "async": 1, "async_wide": 4},
        "speedups": {"async": 2.5, "async_wide": 5.0},
        "equal_wall_s": 60.0,
        "served_staleness_by_run": {"async": {"0": 3, "1": 2}, "async_wide": {"3": 5}},
        "sync": _run(300.0, [0.1, 0.2, 0.3, 0.4, 0.5]),
        "async": _run(120.0, [0.1, float("nan"), 0.3, 0.4, 0.5]),
        "async_wide": _run(60.0, [0.1, 0.2, 0.3, 0.4, 0.5]),
    },
    "memory": {
        "steps": 10,
        "command": ["-m", "rollout.launch", "+experiment=agentic_grpo"],
        "wall_s": 120.0,
        "peak_pss_gib": 5.5,
        "peak_rss_sum_gib": 9.0,
        "peak_t_s": 60.0,
        "processes_at_peak": 12,
        "by_process_gib": {"raylet": 0.1, "VLLM::EngineCore": 2.0},
        "run_peak_memory_gib": 5.0,
        "run_process_s": 100.0,
        "curve_t_s": [0.5, 1.0, 60.0, 90.0],
        "curve_pss_gib": [1.0, 2.0, 5.5, 4.0],
    },
}


def _write(results_dir: Path, name: str, results: dict, commit: str = "a" * 40) -> None:
    record = {
        "name": name,
        "argv": ["--x", "1"],
        "commit": commit,
        "dirty": True,
        "started": "2030-01-02T03:04:05",
        "seconds": 12.0,
        "environment": ENV,
        "results": results,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(record))


def _runs(**status: str) -> dict[str, dict]:
    return {
        b.name: {
            "status": status.get(b.name, "ok"),
            "command": f"python -m bench.{b.module or b.name} --x 1",  # as run_one writes it
            "log": f"bench/results/{b.name}.log",
        }
        for b in BENCHES
    }


@pytest.fixture
def report(tmp_path):
    """Every benchmark recorded except `memory`, which failed."""
    results = tmp_path / "results"
    for name, values in RESULTS.items():
        if name != "memory":
            _write(results, name, values)
    out = tmp_path / "bench" / "RESULTS.md"
    failed = write_report(_runs(memory="failed: exit code 1"), NAMES, results_dir=results, out=out)
    return failed, out.read_text(), out.parent / "plots"


def _line(text: str, *needles: str) -> str:
    """The one line holding every needle."""
    found = [line for line in text.splitlines() if all(n in line for n in needles)]
    assert len(found) >= 1, f"no line with {needles}"
    return found[0]


def test_header_from_the_records(report):
    _, text, _ = report
    assert text.startswith("# Benchmark results")
    assert "Test CPU 9000, 2 cores (1 physical), 16.0 GiB RAM" in text
    assert "torch 2.13.0" in text and "vllm 0.32.0" in text and "python 3.11.7" in text
    assert "aaaaaaaaaaaa (uncommitted changes)" in _line(text, "Git commit")
    assert "2030-01-02T03:04:05" in _line(text, "Date")


def test_async_speedup_goals(report):
    _, text, _ = report
    row = _line(text, "| speed-up over sync, async, max_staleness 1")  # 300 s / 120 s
    assert "2.50x" in row and ">= 3x" in row and "not met" in row
    row = _line(text, "| speed-up over sync, async, max_staleness 4")  # 300 s / 60 s
    assert "5.00x" in row and "goal met" in row
    assert "10% of calls 4.0s, 1 rollout worker." in text
    assert "async, max_staleness 4: 3 behind: 5" in text


def test_rollout_ratios(report):
    _, text, _ = report
    assert "| 0.95x | >= 0.9x | goal met |" in _line(text, "| agent loop / raw vLLM")
    assert "1.50x" in _line(text, "| ngram spec on / off, 1 in flight")
    assert "goal met" in _line(text, "| ngram spec on / off, 1 in flight")
    assert "not met" in _line(text, "| ngram spec on / off, 8 in flight")
    assert "1.30x" in _line(text, "makespan round robin / router")


def test_weight_sync_goal_per_size(report):
    _, text, _ = report
    assert "| 1.50x | <= 2x | goal met |" in _line(text, "| pause / shm floor, small")
    assert "| 2.50x | <= 2x | not met |" in _line(text, "| pause / shm floor, medium")
    assert "| 1.90x | <= 2x | goal met |" in _line(text, "| pause / shm floor, large")


def test_envs_and_learner_relative(report):
    _, text, _ = report
    assert "| 3.00x |" in _line(text, "| 10000 | 1500 |")
    assert "n/a" in _line(text, "| 1000 | 500 |")  # a nan p99 is written as n/a
    assert "| 0.50x |" in _line(text, "| bf16 | 500 |")
    assert "| 0.25x |" in _line(text, "| fp8 | 250 |")
    assert "fp8 / bf16: 0.50x" in text


def test_goals_summary_and_commands(report):
    _, text, _ = report
    summary = text.split("## Goals", 1)[1].split("\n## ", 1)[0]
    # peer: 2 of 3; peer_larger: sync 2x TRL met, async 1.6x TRL and 0.8x sync not;
    # peer_agentic: all three
    assert summary.count("goal met") == 11 and summary.count("not met") == 6
    assert "python -m bench.rollout --x 1" in text
    assert "![envs](plots/envs.png)" in text


def test_failed_benchmark_listed(report):
    failed, text, plots = report
    assert failed == ["memory"]
    assert "**Failed: memory**" in text
    memory = text.split("## Memory", 1)[1]
    assert "failed: exit code 1" in memory and "`bench/results/memory.log`" in memory
    assert not (plots / "memory.png").exists()


def test_cross_node_sync_shows_both_ratios(report):
    _, text, _ = report
    section = text.split("## Weight sync across nodes", 1)[1].split("\n## ", 1)[0]
    assert "| small | 4.0 | 1.00x | 1.60x | 0.050 | 0.050 | 0.025 | 0.005 |" in section


def test_peer_goals_are_judged_against_trl(report):
    _, text, _ = report
    section = text.split("## Peer: TRL's GRPOTrainer\n", 1)[1].split("\n## ", 1)[0]
    assert "means of 3 seeds; reward at equal loop time (per seed, mean 66 s)" in section
    assert "| asyncrl_async | 130.0 |" in section and "| 0.180 ± 0.012 |" in section
    assert (
        "| peer | asyncrl_async / TRL samples/s, tiny case | 1.30x | >= 1.2x | goal met |" in text
    )
    assert (
        "| peer | asyncrl_async / TRL process time, tiny case | 0.88x | <= 1x | goal met |" in text
    )
    assert (
        "| peer | asyncrl_async / TRL reward at equal loop time, tiny case | 0.90x | >= 1x "
        "| not met |" in text
    )


def test_larger_peer_case_judges_async_against_sync_and_names_its_module(report):
    _, text, _ = report
    section = text.split("## Peer: TRL's GRPOTrainer, larger case", 1)[1].split("\n## ", 1)[0]
    assert "| asyncrl_sync / TRL samples/s, larger case | 2.00x | >= 2x | goal met |" in section
    row = "| asyncrl_async / asyncrl_sync samples/s, larger case | 0.80x | >= 1x | not met |"
    assert row in section
    assert "python -m bench.peer " in section  # the module that wrote it, not bench.peer_larger
    assert "|  | asyncrl_sync | asyncrl_async |" in section  # TRL logs no accounting
    assert "| step, wall s | 50.000 | 62.500 |" in section
    assert "| CPU s: learner | n/a | n/a |" in section


def test_agentic_peer_case_says_its_turns_and_tool_latency(report):
    _, text, _ = report
    section = text.split("## Peer: TRL's GRPOTrainer, agentic case", 1)[1].split("\n## ", 1)[0]
    assert "up to 3 turns of at most 48 new tokens, tool latency 0.5 s" in section
    assert "| asyncrl_async / asyncrl_sync samples/s, agentic case | 1.20x | >= 1x |" in section
    assert "python -m bench.peer " in section


def test_plots_written(report):
    _, _, plots = report
    for name in RESULTS:
        if name in ("memory", "cross_node_sync"):  # its run failed here; a table only
            continue
        png = plots / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_missing_or_incomplete_records_fail(tmp_path):
    results = tmp_path / "results"
    _write(results, "learner", {"steps": 4})  # no tokens_per_s
    _write(results, "memory", RESULTS["memory"], commit="b" * 40)
    _write(results, "envs", RESULTS["envs"])
    out = tmp_path / "RESULTS.md"
    failed = write_report({}, NAMES, results_dir=results, out=out)  # --report-only, no runs.json
    assert failed == [
        "weight_sync",
        "cross_node_sync",
        "learner",
        "rollout",
        "async_vs_sync",
        "peer",
        "peer_larger",
        "peer_agentic",
    ]
    text = out.read_text()
    assert "incomplete (KeyError" in text
    assert "python -m bench.memory --x 1" in text  # rebuilt from the record's argv
    assert (tmp_path / "plots" / "memory.png").exists()
    commit = _line(text, "Git commit")
    assert "aaaaaaaaaaaa (uncommitted changes): envs" in commit and "bbbbbbbbbbbb" in commit


def test_reward_at_equal_wall_time():
    history = [
        {"perf/elapsed_s": 10.0, "rollout/reward_mean": 0.1},
        {"perf/elapsed_s": 85.0, "rollout/reward_mean": 0.4},
        {"perf/elapsed_s": 95.0, "rollout/reward_mean": 0.6},
        {"perf/elapsed_s": 120.0, "rollout/reward_mean": 0.9},
    ]
    assert reward_at(history, 100.0) == pytest.approx(0.5)  # steps in [80, 100]
    assert reward_at(history, 50.0) == pytest.approx(0.1)  # none in [40, 50]: the last done
    assert math.isnan(reward_at(history, 5.0))


def test_an_earlier_record_in_baseline_is_set_beside_this_runs_accounting(tmp_path, report):
    _, text, _ = report
    assert "Before and after" not in text  # no baseline record, no table
    results = tmp_path / "results"
    earlier = json.loads(json.dumps(RESULTS["peer_larger"]))
    earlier["sides"]["asyncrl_sync"]["samples_per_s"] = 1.0  # as fast as TRL then
    earlier["sides"]["asyncrl_sync"]["accounting"]["perf/step_s"] = 128.0
    _write(results / "baseline", "peer_larger", earlier, commit="b" * 40)
    out = tmp_path / "with_baseline" / "RESULTS.md"
    write_report(_runs(), NAMES, results_dir=results, out=out)
    text = out.read_text()
    section = text.split("## Peer: TRL's GRPOTrainer, larger case", 1)[1].split("\n## ", 1)[0]
    assert "Before and after, each mode: the run at commit bbbbbbb (2030-01-02T03:04:05" in section
    modes = "asyncrl_sync before | asyncrl_sync after | asyncrl_async before | asyncrl_async after"
    assert f"|  | {modes} |" in section
    assert "| TRL's step in the same run, s (the day's speed) | 100.000 | 100.000 |" in section
    assert "| samples/s / TRL's, same run | 1.00x | 2.00x | 1.60x | 1.60x |" in section
    assert "| step, wall s | 128.000 | 50.000 | 62.500 | 62.500 |" in section
