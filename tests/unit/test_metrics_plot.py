"""core.metrics.MetricsLogger redraws its plot every logger.plot_every steps, but not
more often than logger.plot_min_interval_s, and always when the run ends."""

from __future__ import annotations

from core.config import LoggerConfig
from core.metrics import MetricsLogger


def _draws(tmp_path, monkeypatch, every: int, min_interval_s: float, steps: int) -> int:
    cfg = LoggerConfig(run_dir=str(tmp_path), plot_every=every, plot_min_interval_s=min_interval_s)
    cfg.wandb.enabled = False
    logger = MetricsLogger(cfg)
    drawn = []
    draw = logger.plot
    monkeypatch.setattr(logger, "plot", lambda: drawn.append(1) or draw())
    for step in range(steps):
        logger.log(step, {"rollout/reward_mean": step / steps})
    during = len(drawn)
    logger.close()
    assert len(drawn) == during + 1  # the final plot
    assert (tmp_path / "reward_curve.png").stat().st_size > 0
    return during


def test_plots_every_n_steps_when_the_interval_allows(tmp_path, monkeypatch):
    assert _draws(tmp_path, monkeypatch, every=2, min_interval_s=0.0, steps=6) == 3


def test_the_minimum_interval_holds_back_redraws(tmp_path, monkeypatch):
    assert _draws(tmp_path, monkeypatch, every=1, min_interval_s=3600.0, steps=6) == 1


def test_plot_every_zero_draws_only_at_the_end(tmp_path, monkeypatch):
    assert _draws(tmp_path, monkeypatch, every=0, min_interval_s=0.0, steps=4) == 0
