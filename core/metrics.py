"""One metrics sink for a run: metrics.jsonl, W&B (offline by default), a PNG plot.

Metrics are flat `prefix/name -> float` dicts (rollout/, env/, reward/, buffer/,
learner/, sync/, perf/, fault/). Only the driver logs; actors return metrics.
wandb and matplotlib are imported when first needed; the plot is redrawn during a
run on a thread of its own (matplotlib's figure API, no pyplot state), so the
driver's event loop is not held up by it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
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


DRAW_TIMEOUT_S = 60.0
"""How long the end of a run waits for a redraw under way before drawing its own."""


class MetricsLogger:
    def __init__(self, cfg: LoggerConfig, run_config: dict[str, Any] | None = None):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.plot_path = self.run_dir / "reward_curve.png"
        self.history: list[dict[str, float]] = []
        self._jsonl = open(self.jsonl_path, "a", buffering=1)
        # The first redraw waits plot_min_interval_s too: a plot of the first steps
        # says nothing, and matplotlib's import and first draw cost ~1 s of CPU.
        self._plotted_at = time.monotonic()
        self._drawing: threading.Thread | None = None
        self._wandb = self._start_wandb(run_config or {}) if cfg.wandb.enabled else None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.history.append(row)
        self._jsonl.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log(row, step=step)
        if self._plot_due(step):
            self._redraw_beside()

    def _plot_due(self, step: int) -> bool:
        every = self.cfg.plot_every
        if not every or step % every:
            return False
        return time.monotonic() - self._plotted_at >= self.cfg.plot_min_interval_s

    def _redraw_beside(self) -> None:
        """Redraw from the rows logged so far on a thread of its own, unless the last
        redraw is still under way."""
        if self._drawing is not None and self._drawing.is_alive():
            return
        self._plotted_at = time.monotonic()
        rows = list(self.history)  # rows are never changed once logged
        self._drawing = threading.Thread(target=self.plot, args=(rows,), name="plot", daemon=True)
        self._drawing.start()

    def plot(self, history: list[dict[str, float]] | None = None) -> Path | None:
        """Reward curve and companions, one panel per metric present in `history`
        (default: every row logged)."""
        history = self.history if history is None else history
        panels = [(k, title) for k, title in PLOT_PANELS if any(k in r for r in history)]
        if not panels:
            return None
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 2.4 * len(panels)))
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (key, title) in zip(axes, panels, strict=True):
            rows = [r for r in history if key in r]
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
        return self.plot_path

    def redrawn(self, timeout_s: float = DRAW_TIMEOUT_S) -> bool:
        """Wait up to `timeout_s` for a redraw under way; whether none is running now."""
        if self._drawing is not None:
            self._drawing.join(timeout=timeout_s)
        return self._drawing is None or not self._drawing.is_alive()

    def close(self) -> None:
        if not self.redrawn():
            log.warning("the plot's redraw is still running after %.0f s", DRAW_TIMEOUT_S)
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
