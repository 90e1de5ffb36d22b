"""core.metrics.MetricsLogger redraws its plot every logger.plot_every steps, but not
more often than logger.plot_min_interval_s (the first one too, counted from its
start), on a thread beside the caller, and always when the run ends."""

from __future__ import annotations

import threading

from core.config import LoggerConfig
from core.metrics import MetricsLogger


def _logger(tmp_path, every: int, min_interval_s: float) -> MetricsLogger:
    cfg = LoggerConfig(run_dir=str(tmp_path), plot_every=every, plot_min_interval_s=min_interval_s)
    cfg.wandb.enabled = False
    return MetricsLogger(cfg)


def _draws(tmp_path, monkeypatch, every: int, min_interval_s: float, steps: int) -> int:
    logger = _logger(tmp_path, every, min_interval_s)
    drawn = []
    draw = logger.plot
    monkeypatch.setattr(logger, "plot", lambda *rows: drawn.append(1) or draw(*rows))
    for step in range(steps):
        logger.log(step, {"rollout/reward_mean": step / steps})
        assert logger.redrawn(timeout_s=60)
    during = len(drawn)
    logger.close()
    assert len(drawn) == during + 1  # the final plot
    assert (tmp_path / "reward_curve.png").stat().st_size > 0
    return during


def test_plots_every_n_steps_when_the_interval_allows(tmp_path, monkeypatch):
    assert _draws(tmp_path, monkeypatch, every=2, min_interval_s=0.0, steps=6) == 3


def test_the_minimum_interval_holds_back_redraws_the_first_one_too(tmp_path, monkeypatch):
    assert _draws(tmp_path, monkeypatch, every=1, min_interval_s=3600.0, steps=6) == 0


def test_plot_every_zero_draws_only_at_the_end(tmp_path, monkeypatch):
    assert _draws(tmp_path, monkeypatch, every=0, min_interval_s=0.0, steps=4) == 0


def test_a_redraw_runs_beside_the_caller_and_one_at_a_time(tmp_path, monkeypatch):
    logger = _logger(tmp_path, every=1, min_interval_s=0.0)
    release, threads = threading.Event(), []

    def slow_plot(rows):
        threads.append(threading.get_ident())
        release.wait(timeout=60)
        return None

    monkeypatch.setattr(logger, "plot", slow_plot)
    logger.log(0, {"rollout/reward_mean": 0.0})  # returns while the redraw waits
    logger.log(1, {"rollout/reward_mean": 1.0})  # the first still runs: no second one
    assert not logger.redrawn(timeout_s=0.2)
    release.set()
    assert logger.redrawn(timeout_s=60)
    assert len(threads) == 1 and threads[0] != threading.get_ident()
