"""One training run from a validated config: checks, policy, actors, loop, outputs.

Its outputs in the run directory: config.yaml, metrics.jsonl and the plot (core.metrics),
eval/v<version>.jsonl (orchestrator.evaluation),
checkpoints, `final_model/` (a complete Hugging Face checkpoint: weights, config,
tokenizer and chat template) and summary.json, whose times say what they cover.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bootstrap.policy import export_tokenizer
from core.config import Config, ConfigError
from core.metrics import MetricsLogger
from orchestrator import actors
from orchestrator.assembly import RunState
from orchestrator.checkpoint import (
    ControllerState,
    checkpoint_root,
    latest,
    read_controller_state,
)
from orchestrator.controller import train
from orchestrator.preflight import preflight
from orchestrator.system import System

log = logging.getLogger(__name__)


async def run(cfg: Config, alongside: Callable[[System], Awaitable[Any]] | None = None) -> RunState:
    """Train per `cfg`. `alongside(system)`, if given, runs as a task next to the
    training loop until the loop ends (the chaos driver, bench/chaos)."""
    clock = Clock()
    resume_from = resume_point(cfg)
    checking = asyncio.ensure_future(asyncio.to_thread(preflight, cfg))  # before any actor
    actors.start_ray(cfg)  # meanwhile: Ray's processes start while the checks run
    checked = await checking
    cfg = with_context_length(cfg, checked.max_model_len)
    log.info("policy: %s (context %d tokens)", checked.model_path, checked.max_model_len)
    system = await System.start(cfg, checked.model_path)
    logger = MetricsLogger(cfg.logger, dataclasses.asdict(cfg))
    write_config(cfg, Path(cfg.logger.run_dir))
    progress = _progress_bar(cfg)
    companion = asyncio.create_task(alongside(system)) if alongside else None
    clock.mark("startup_s")
    try:
        resume = await restore(system, resume_from) if resume_from else None
        state = await train(system, cfg, logger, progress, resume, checked.tasks)
        clock.mark("loop_s")
        if companion is not None:
            companion.cancel()
        final = Path(cfg.logger.run_dir) / "final_model"
        await system.learner.save_pretrained(str(final))
        await asyncio.to_thread(export_tokenizer, checked.model_path, str(final))
        log.info("final policy v%d saved to %s", state.version, final)
    finally:
        if companion is not None:
            companion.cancel()
        progress.close()
        await _close(logger, system)
    clock.mark("shutdown_s")
    summary = write_summary(state, Path(cfg.logger.run_dir), clock.times())
    log.info("summary: %s", json.dumps(summary))
    log.info("run finished in %.0fs; outputs in %s", summary["process_s"], cfg.logger.run_dir)
    return state


async def _close(logger: MetricsLogger, system: System) -> None:
    """The final plot (a thread: matplotlib's CPU) beside the fleet's shut-down (mostly
    waiting for processes to exit); both run to their end before either's error is
    raised."""
    done = await asyncio.gather(
        asyncio.to_thread(logger.close), system.shutdown(), return_exceptions=True
    )
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome


def with_context_length(cfg: Config, max_model_len: int) -> Config:
    """`cfg` with rollout.max_model_len as preflight settled it (None resolved)."""
    rollout = dataclasses.replace(cfg.rollout, max_model_len=max_model_len)
    return dataclasses.replace(cfg, rollout=rollout)


class Clock:
    """Named spans of a run, one after another, and the process's age."""

    def __init__(self) -> None:
        self.spans: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        """The span from the previous mark (or the start) to now is `name`."""
        now = time.perf_counter()
        self.spans[name] = now - self._last
        self._last = now

    def times(self) -> dict[str, float]:
        """process_s (since the process started, interpreter and imports included)
        and every span."""
        import psutil

        return {"process_s": time.time() - psutil.Process().create_time(), **self.spans}


def resume_point(cfg: Config) -> Path | None:
    if not cfg.trainer.resume:
        return None
    directory = latest(checkpoint_root(cfg))
    if directory is None:
        raise ConfigError(
            f"trainer.resume=true but {checkpoint_root(cfg)} has no checkpoint; pass the "
            "stopped run's directory: hydra.run.dir=runs/<date>/<time> (or its "
            "trainer.checkpoint_dir)"
        )
    return directory


async def restore(system: System, directory: Path) -> ControllerState:
    """Load the learner's checkpoint, bring its weights to the rollout workers and
    return the controller's saved state."""
    await system.learner.load_checkpoint(directory)
    controller = read_controller_state(directory)
    # The controller numbers versions (the learner's own step count can differ
    # after a learner restore); publish the restored weights under its number.
    await system.fleet.publish(await system.learner.export_weights(controller.version))
    log.info(
        "resumed from %s at step %d, version %d",
        directory,
        controller.next_step,
        controller.version,
    )
    return controller


def write_config(cfg: Config, run_dir: Path) -> Path:
    """<run_dir>/config.yaml: the whole config the run used (what bench.compare and
    a later reader see, wherever logger.run_dir points)."""
    from omegaconf import OmegaConf

    path = run_dir / "config.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return path


def write_summary(state: RunState, run_dir: Path, times: dict[str, float]) -> dict[str, float]:
    """The headline numbers of a run, also written to summary.json. `times`:
    process_s (the whole process), startup_s (checks, policy, actors), loop_s (the
    training loop), shutdown_s (final model, outputs, actors stopped)."""
    rewards = [h["rollout/reward_mean"] for h in state.history if "rollout/reward_mean" in h]
    fifth = max(1, len(rewards) // 5)
    summary = {
        "steps": float(len(state.history)),
        "final_version": float(state.version),
        **{name: round(seconds, 2) for name, seconds in times.items()},
        "reward_first_fifth": sum(rewards[:fifth]) / fifth if rewards else float("nan"),
        "reward_last_fifth": sum(rewards[-fifth:]) / fifth if rewards else float("nan"),
        "peak_memory_gib": max((h.get("perf/memory_gib", 0.0) for h in state.history), default=0.0),
        "trajectories_trained": float(len(state.trained)),
    }
    if state.evaluations:
        first, last = state.evaluations[0], state.evaluations[-1]
        summary |= {
            "eval_first": first.get("eval/accuracy", float("nan")),
            "eval_last": last.get("eval/accuracy", float("nan")),
            "eval_seconds": sum(e.get("eval/seconds", 0.0) for e in state.evaluations),
        }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class _Progress:
    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            unit="step",
            disable=not enabled,
            dynamic_ncols=True,
            miniters=1,  # redraw on every step, however long or short it took
            mininterval=0,
        )

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self.bar.set_postfix(  # drawn by the update below: one redraw per step
            reward=f"{metrics.get('rollout/reward_mean', float('nan')):.3f}",
            tok_s=f"{metrics.get('perf/rollout_tokens_per_s', 0.0):.0f}",
            stale=int(metrics.get("learner/staleness_max", 0)),
            refresh=False,
        )
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _progress_bar(cfg: Config) -> _Progress:
    return _Progress(cfg.trainer.total_steps, cfg.logger.progress)
