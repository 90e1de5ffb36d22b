"""One metrics sink for a run: metrics.jsonl, W&B (offline by default), a PNG plot.

Metrics are flat `prefix/name -> float` dicts (rollout/, env/, reward/, buffer/,
learner/, sync/, perf/, fault/). Only the driver logs; actors return metrics.
wandb and matplotlib are imported when first needed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from core.config import LoggerConfig

log = logging.getLogger(__name__)

PLOT_PANELS = (
    ("rollout/reward_mean", "reward (mean over the batch)"),
    ("eval/accuracy", "held-out accuracy (eval) by policy version"),
    ("rollout/correct_rate", "correct answers"),
    ("rollout/tool_use_rate", "episodes that call a tool"),
    ("learner/kl_behavior", "KL(behavior || current)"),
)
EVAL_X = "eval/version"
"""Evaluation panels are drawn against the version evaluated (= steps trained into it),
not the step their result was logged at."""


class MetricsLogger:
    def __init__(self, cfg: LoggerConfig, run_config: dict[str, Any] | None = None):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.plot_path = self.run_dir / "reward_curve.png"
        self.history: list[dict[str, float]] = []
        self._jsonl = open(self.jsonl_path, "a", buffering=1)
        self._plotted_at = -math.inf
        self._wandb = self._start_wandb(run_config or {}) if cfg.wandb.enabled else None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.history.append(row)
        self._jsonl.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log(row, step=step)
        if self._plot_due(step):
            self.plot()

    def _plot_due(self, step: int) -> bool:
        every = self.cfg.plot_every
        if not every or step % every:
            return False
        return time.monotonic() - self._plotted_at >= self.cfg.plot_min_interval_s

    def plot(self) -> Path | None:
        """Reward curve and companions, one panel per metric present."""
        self._plotted_at = time.monotonic()
        panels = [(k, title) for k, title in PLOT_PANELS if any(k in r for r in self.history)]
        if not panels:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.4 * len(panels)), sharex=True)
        axes = [axes] if len(panels) == 1 else list(axes)
        for ax, (key, title) in zip(axes, panels, strict=True):
            rows = [r for r in self.history if key in r]
            if key.startswith("eval/"):
                ax.plot([r[EVAL_X] for r in rows], [r[key] for r in rows], "o-", color="tab:green")
            else:
                steps, values = [r["step"] for r in rows], [r[key] for r in rows]
                ax.plot(steps, values, alpha=0.35, color="tab:blue")
                ax.plot(steps, _moving_average(values, 5), color="tab:blue", linewidth=2)
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
        axes[-1].set_xlabel("learner step")
        fig.tight_layout()
        fig.savefig(self.plot_path, dpi=100)
        plt.close(fig)
        return self.plot_path

    def close(self) -> None:
        self.plot()
        self._jsonl.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def _start_wandb(self, run_config: dict[str, Any]) -> Any:
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        wandb_cfg = self.cfg.wandb
        return wandb.init(
            project=wandb_cfg.project,
            entity=wandb_cfg.entity,
            mode=wandb_cfg.mode,
            dir=str(self.run_dir),
            config=run_config,
            name=self.run_dir.name,
        )


def _plain(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else float("nan")


def _moving_average(values: list[float], window: int) -> list[float]:
    out: list[float] = []
    for i in range(len(values)):
        chunk = [v for v in values[max(0, i - window + 1) : i + 1] if math.isfinite(v)]
        out.append(sum(chunk) / len(chunk) if chunk else float("nan"))
    return out
