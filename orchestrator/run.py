"""One training run from a validated config: policy, actors, loop, outputs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

from core.config import Config
from core.metrics import MetricsLogger
from orchestrator.bootstrap import resolve_policy
from orchestrator.controller import RunState, train
from orchestrator.system import System

log = logging.getLogger(__name__)


async def run(cfg: Config) -> RunState:
    started = time.perf_counter()
    model_path = await asyncio.to_thread(resolve_policy, cfg.model)
    log.info("policy: %s", model_path)
    system = await System.start(cfg, model_path)
    logger = MetricsLogger(cfg.logger, dataclasses.asdict(cfg))
    progress = _progress_bar(cfg)
    try:
        state = await train(system, cfg, logger, progress)
        final = Path(cfg.logger.run_dir) / "final_model"
        await system.save_pretrained(str(final))
        log.info("final policy v%d saved to %s", state.version, final)
    finally:
        logger.close()
        progress.close()
        await system.shutdown()
    log.info(
        "run finished in %.0fs; outputs in %s", time.perf_counter() - started, cfg.logger.run_dir
    )
    return state


class _Progress:
    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", disable=not enabled, dynamic_ncols=True)

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(
            reward=f"{metrics.get('rollout/reward_mean', float('nan')):.3f}",
            tok_s=f"{metrics.get('perf/rollout_tokens_per_s', 0.0):.0f}",
            stale=int(metrics.get("learner/staleness_max", 0)),
        )

    def close(self) -> None:
        self.bar.close()


def _progress_bar(cfg: Config) -> _Progress:
    return _Progress(cfg.trainer.total_steps, cfg.logger.progress)
