"""bench.compare on run directories written here the way a run writes them: the real
MetricsLogger (W&B off, no periodic plot) and the real Config schema as YAML, in
Hydra's layout (`.hydra/config.yaml`) or a bench run's (`config.yaml`)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from bench.compare import axis_for, figure, load_runs, main, run_names
from core.config import Config, LoggerConfig, WandbConfig
from core.metrics import MetricsLogger

ROOT = Path(__file__).resolve().parents[2]


def write_run(
    path: Path,
    rows: list[tuple[int, dict[str, float]]],
    config: dict[str, object] | None = None,
    extra: dict[str, dict] | None = None,
    hydra: bool = True,
) -> Path:
    """A run dir: the default Config with `config` (dotted key -> value) applied and
    `extra` merged in as raw YAML, then `rows` logged through MetricsLogger."""
    cfg = OmegaConf.structured(Config())
    cfg.logger.run_dir = str(path)
    for key, value in (config or {}).items():
        OmegaConf.update(cfg, key, value)
    tree = OmegaConf.to_container(cfg, enum_to_str=True)
    for section, values in (extra or {}).items():
        tree[section].update(values)
    config_path = path / ".hydra" / "config.yaml" if hydra else path / "config.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(tree))
    logger = MetricsLogger(
        LoggerConfig(run_dir=str(path), wandb=WandbConfig(enabled=False), plot_every=0)
    )
    for step, metrics in rows:
        logger.log(step, metrics)
    logger.close()
    return path


def train_rows(steps: int, reward: float = 0.5) -> list[tuple[int, dict[str, float]]]:
    return [
        (s, {"rollout/reward_mean": reward + 0.01 * s, "perf/elapsed_s": 2.0 * (s + 1)})
        for s in range(steps)
    ]


def eval_own_rows() -> list[tuple[int, dict[str, float]]]:
    """Training rows with evaluations on rows of their own, versions 0, 5, 10."""
    evals = {0: (0.25, 0.5, 1.0), 5: (0.5, 0.75, 12.5), 10: (0.5, 1.0, 21.0)}
    rows = train_rows(10)
    for version, (acc, pass4, elapsed) in evals.items():
        metrics = {"eval/version": version, "eval/accuracy": acc, "eval/pass@4": pass4}
        rows.append((version, {**metrics, "eval/elapsed_s": elapsed, "eval/seconds": 0.5}))
    return sorted(rows, key=lambda r: r[0])


def eval_inline_rows() -> list[tuple[int, dict[str, float]]]:
    """Evaluations on the training rows of steps 0, 4, 8, no eval/elapsed_s."""
    evals = {0: (0.5, 0.25, 0.5), 4: (0.75, 0.5, 0.75), 8: (0.625, 0.5, 1.0)}
    rows = train_rows(9, reward=0.2)
    for step, metrics in rows:
        if step in evals:
            acc, pass1, pass4 = evals[step]
            metrics.update({"eval/version": step, "eval/accuracy": acc})
            metrics.update({"eval/pass@1": pass1, "eval/pass@4": pass4})
    return rows


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    base = write_run(
        tmp_path / "base",
        eval_own_rows(),
        config={"buffer.max_staleness": 2},
        extra={"trainer": {"note": "first try"}},
    )
    (base / "summary.json").write_text(json.dumps({"process_s": 40.0, "loop_s": 30.0}))
    wide = write_run(
        tmp_path / "wide",
        eval_inline_rows(),
        config={"buffer.max_staleness": 4, "algo.name": "dapo"},
        hydra=False,
    )
    return [base, wide]


def section(out: str, title: str) -> list[str]:
    """The lines under the first line starting with `title`, up to a blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def table(lines: list[str]) -> dict[str, dict[str, str]]:
    """An aligned table as first cell -> {header: cell}."""
    header, *rows = (re.split(r"\s{2,}", line.strip()) for line in lines)
    assert all(len(r) == len(header) for r in rows), lines
    return {r[0]: dict(zip(header, r, strict=True)) for r in rows}


def compare(capsys, *args: object) -> str:
    assert main([str(a) for a in args]) == 0
    return capsys.readouterr().out


def test_config_diff_shows_exactly_the_differing_keys(two_runs, tmp_path, capsys):
    out = compare(capsys, *two_runs, "--out", tmp_path / "c.png")
    diff = table(section(out, "config differences"))
    # logger.run_dir differs too, but means nothing
    assert set(diff) == {"algo.name", "buffer.max_staleness", "trainer.note"}
    assert diff["buffer.max_staleness"] == {"key": "buffer.max_staleness", "base": "2", "wide": "4"}
    assert (diff["algo.name"]["base"], diff["algo.name"]["wide"]) == ("grpo", "dapo")
    assert (diff["trainer.note"]["base"], diff["trainer.note"]["wide"]) == ("first try", "-")
    assert "config differences (3 keys)" in out


def test_identical_configs_print_no_differences(tmp_path, capsys):
    runs = [write_run(tmp_path / n, train_rows(3)) for n in ("a", "b")]
    out = compare(capsys, *runs, "--out", tmp_path / "c.png")
    assert "config differences: none" in out


def test_eval_table_one_row_per_version_and_a_column_per_run(two_runs, tmp_path, capsys):
    out = compare(capsys, *two_runs, "--out", tmp_path / "c.png")
    rows = table(section(out, "eval/accuracy by version"))
    assert list(rows) == ["0", "4", "5", "8", "10"]
    first_columns = ["version", "base accuracy", "wide accuracy", "base pass@1", "wide pass@1"]
    assert list(rows["0"])[:5] == first_columns
    assert list(rows["0"])[5:] == ["base pass@4", "wide pass@4"]
    assert (rows["0"]["base accuracy"], rows["0"]["wide accuracy"]) == ("0.250", "0.500")
    assert (rows["4"]["base accuracy"], rows["4"]["wide accuracy"]) == ("-", "0.750")
    assert (rows["10"]["base pass@4"], rows["10"]["base pass@1"]) == ("1.000", "-")
    assert rows["8"]["wide pass@1"] == "0.500"
    assert "no eval/accuracy" not in out


def test_final_and_best_with_the_wall_time_to_reach_them(two_runs, tmp_path, capsys):
    out = compare(capsys, *two_runs, "--out", tmp_path / "c.png")
    lines = section(out, "final and best eval/accuracy")
    cells = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    # points, final, at version, at s, best, at version, at s, loop s (summary.json)
    assert cells["base"] == ["3", "0.500", "10", "21.0", "0.500", "5", "12.5", "30.0"]
    # no eval/elapsed_s: the row's perf/elapsed_s (step 4 -> 10 s, step 8 -> 18 s);
    # no summary.json
    assert cells["wide"] == ["3", "0.625", "8", "18.0", "0.750", "4", "10.0", "-"]


def test_metric_flag_compares_another_eval_metric(two_runs, tmp_path, capsys):
    out = compare(capsys, *two_runs, "--metric", "eval/pass@4", "--out", tmp_path / "c.png")
    rows = table(section(out, "eval/pass@4 by version"))
    assert list(rows["5"])[1:3] == ["base pass@4", "wide pass@4"]
    assert rows["5"]["base pass@4"] == "0.750"
    assert "base accuracy" in rows["5"]
    best = section(out, "final and best eval/pass@4")
    assert best[1].split()[:6] == ["base", "3", "1.000", "10", "21.0", "1.000"]


def test_png_has_two_labelled_panels(two_runs, tmp_path, capsys):
    out_path = tmp_path / "plots" / "cmp.png"
    out = compare(capsys, *two_runs, "--out", out_path)
    assert out_path.stat().st_size > 1000
    assert f"wrote {out_path}" in out
    fig = figure(load_runs(two_runs), axis_for("eval/accuracy"))
    by_step, by_time = fig.axes
    for ax in (by_step, by_time):
        assert [line.get_label() for line in ax.get_lines()] == ["base", "wide"]
    base_step, base_time = by_step.get_lines()[0], by_time.get_lines()[0]
    assert list(base_step.get_xdata()) == [0, 5, 10]
    assert list(base_step.get_ydata()) == [0.25, 0.5, 0.5]
    assert list(base_time.get_xdata()) == [1.0, 12.5, 21.0]
    assert by_step.get_ylabel() == "eval/accuracy"


def test_default_png_lands_in_the_current_dir(two_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    compare(capsys, *two_runs)
    assert (tmp_path / "compare.png").stat().st_size > 0


def test_runs_without_eval_fall_back_to_training_reward(tmp_path, capsys):
    plain = write_run(tmp_path / "plain", train_rows(30))
    evald = write_run(tmp_path / "evald", eval_own_rows())
    out = compare(capsys, evald, plain, "--out", tmp_path / "c.png")
    assert "no eval/accuracy in plain: comparing training reward rollout/reward_mean" in out
    title = "rollout/reward_mean by step (20 of 30 steps shown)"
    rows = table(section(out, title))
    assert len(rows) == 20 and {"0", "29"} <= set(rows)
    assert (rows["0"]["evald"], rows["0"]["plain"]) == ("0.500", "0.500")
    assert (rows["29"]["evald"], rows["29"]["plain"]) == ("-", "0.790")
    best = section(out, "final and best rollout/reward_mean")
    assert best[2].split() == ["plain", "30", "0.790", "29", "60.0", "0.790", "29", "60.0", "-"]
    runs = load_runs([evald, plain])
    by_step, _ = figure(runs, axis_for("rollout/reward_mean")).axes
    assert by_step.get_ylabel() == "rollout/reward_mean"
    assert len(by_step.get_lines()[1].get_xdata()) == 30


def test_not_a_run_dir_is_one_line_and_exit_2(two_runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cmd = [sys.executable, "-m", "bench.compare", str(two_runs[0]), str(empty)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"bench.compare: {empty}: not a run directory (no metrics.jsonl)"
    ]


def test_missing_dir_is_one_line_and_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.png")]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"bench.compare: {tmp_path / 'nowhere'}: not a directory"]
    assert not (tmp_path / "c.png").exists()


def test_equal_dir_names_are_told_apart_by_parent(tmp_path):
    a = write_run(tmp_path / "monday" / "run", train_rows(2))
    b = write_run(tmp_path / "tuesday" / "run", train_rows(2))
    assert [r.name for r in load_runs([a, b])] == ["monday/run", "tuesday/run"]
    twice = [Path("/x/run"), Path("/y/z"), Path("/x/run")]
    assert run_names(twice) == ["run", "z", "run#2"]
    clash = [Path("/a/x/run"), Path("/b/x/run"), Path("/a/x/run")]
    assert run_names(clash) == ["a/x/run", "b/x/run", "a/x/run#2"]


def test_a_truncated_metrics_line_is_skipped_and_said(tmp_path, capsys):
    run = write_run(tmp_path / "cut", train_rows(3))
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "rollout/rew')
    out = compare(capsys, run, "--out", tmp_path / "c.png")
    assert "cut: 1 unreadable line(s) in metrics.jsonl skipped" in out
    assert table(section(out, "rollout/reward_mean by step")).keys() == {"0", "1", "2"}


def test_one_versions_eval_split_over_rows_is_merged_later_wins(tmp_path, capsys):
    rows = [
        *train_rows(4),
        (3, {"eval/version": 3, "eval/accuracy": 0.4}),
        (3, {"eval/version": 3, "eval/pass@4": 0.9, "eval/elapsed_s": 7.0}),
        (4, {"eval/version": 3, "eval/accuracy": 0.6}),  # re-evaluated after a resume
        (4, {"eval/version": 4, "eval/accuracy": math.inf}),  # logged as NaN
    ]
    run = write_run(tmp_path / "split", rows)
    out = compare(capsys, run, "--out", tmp_path / "c.png")
    table_rows = table(section(out, "eval/accuracy by version"))
    assert table_rows["3"] == {"version": "3", "split accuracy": "0.600", "split pass@4": "0.900"}
    best = section(out, "final and best eval/accuracy")[1].split()
    # the NaN of version 4 (no elapsed time on its row) is its final value, never its best
    assert best == ["split", "2", "nan", "4", "-", "0.600", "3", "7.0", "-"]
