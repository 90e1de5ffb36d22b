"""Run checkpoints: everything a stopped run needs to continue where it was.

Under the checkpoint root (`checkpoint_root`: trainer.checkpoint_dir, else
<run_dir>/checkpoints):

    <root>/step-<n>/learner/        DeepSpeed checkpoint of every rank (weights,
                                    optimizer, LR schedule, policy version, RNG states)
    <root>/step-<n>/controller.pkl  next step, version, task-seed position, seeds of
                                    groups still in flight, the ids issued, the replay
                                    buffer and the ledger
    <root>/latest                   the newest complete checkpoint's name

Every learner rank writes its own part under step-<n>/learner, so on a cluster the
root must be storage every learner node mounts at the same path.

`latest` is written last (atomically), so a run killed while checkpointing
resumes from the previous one. Groups in flight at a checkpoint are not lost:
their seeds are saved and re-run first after a resume.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import Config

log = logging.getLogger(__name__)

LATEST = "latest"
LEARNER_TAG = "learner"


@dataclass
class ControllerState:
    next_step: int
    version: int
    next_seed: int
    pending_seeds: list[int] = field(default_factory=list)
    """Seeds of groups started but not yet admitted: re-run first on resume."""
    buffer: dict[str, Any] = field(default_factory=dict)
    ledger: dict[str, Any] = field(default_factory=dict)
    reruns: dict[int, int] = field(default_factory=dict)
    """Seed -> times its group was re-run after an environment failure."""
    losses: dict[int, int] = field(default_factory=dict)
    """Seed -> times its group was declared lost (its next ids depend on it)."""
    issued: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Group id -> the trajectory ids the producer issued for it (the ledger's audit)."""
    tasks: dict[str, Any] = field(default_factory=dict)
    """The task sampler's state (orchestrator.curriculum): a finite task set's epoch
    position, pass counts, retirements and RNG; empty for sequential seeds."""


async def save_run(
    learner: Any, root: Path, step: int, version: int, producer: Any, buffer: Any, ledger: Any
) -> dict[str, float]:
    """Save the learner and the controller's state after step `step` (0-based) under
    the checkpoint root `root`."""
    started = time.perf_counter()
    directory = step_dir(root, step + 1)
    await learner.save_checkpoint(directory)
    state = ControllerState(
        next_step=step + 1,
        version=version,
        buffer=buffer.state(),
        ledger=ledger.state(),
        **producer.saved_state(),
    )
    write_controller_state(directory, state)
    mark_latest(root, directory)
    log.info("checkpoint after step %d: %s", step, directory)
    return {"checkpoint/s": time.perf_counter() - started}


def checkpoint_root(cfg: Config) -> Path:
    """Where the run's checkpoints go: trainer.checkpoint_dir, else <run_dir>/checkpoints."""
    if cfg.trainer.checkpoint_dir:
        return Path(cfg.trainer.checkpoint_dir)
    return checkpoints_dir(cfg.logger.run_dir)


def checkpoints_dir(run_dir: str | Path) -> Path:
    """The default checkpoint root of a run directory."""
    return Path(run_dir) / "checkpoints"


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step-{step}"


def write_controller_state(directory: Path, state: ControllerState) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / "controller.pkl", pickle.dumps(state))


def mark_latest(root: str | Path, directory: Path) -> None:
    _atomic_write(Path(root) / LATEST, directory.name.encode())


def latest(root: str | Path) -> Path | None:
    """The newest complete checkpoint under the checkpoint root `root`, or None."""
    marker = Path(root) / LATEST
    if not marker.exists():
        return None
    return Path(root) / marker.read_text().strip()


def read_controller_state(directory: Path) -> ControllerState:
    return pickle.loads((directory / "controller.pkl").read_bytes())  # noqa: S301 - our own file


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
