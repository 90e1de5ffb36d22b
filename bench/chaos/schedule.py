"""The kill schedule: which kinds of actor the chaos run kills, in what order, when.

A pure function of `ChaosConfig` (its seed draws the delays, the targets and which
actor of a kind is hit); knows nothing of Ray or of the run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from core.config import ConfigError

TARGETS = ("rollout", "pool", "learner")


@dataclass(frozen=True)
class ChaosConfig:
    seed: int = 0
    """Draws the delays, the targets and which actor of a kind is hit."""
    kills: int = 10
    min_interval_s: float = 2.0
    """Shortest wait after the previous kill recovered (or the driver started)."""
    max_interval_s: float = 6.0
    targets: tuple[str, ...] = TARGETS
    """Kinds of actor to kill: rollout, pool, learner (each hit at least once
    when `kills` allows)."""
    recovery_timeout_s: float = 300.0
    """How long the driver waits for a kill to be recovered before it reports it."""


@dataclass(frozen=True)
class PlannedKill:
    delay_s: float
    """After the previous kill recovered (or the driver started)."""
    target: str
    pick: int
    """Which actor of the kind: pick % how many there are at kill time."""


def plan(cfg: ChaosConfig) -> list[PlannedKill]:
    """The kill schedule `cfg.seed` draws: every target at least once (when there
    are enough kills), the rest uniform, delays in [min, max] interval."""
    unknown = set(cfg.targets) - set(TARGETS)
    if unknown or not cfg.targets:
        raise ConfigError(f"chaos targets must be among {', '.join(TARGETS)}; got {cfg.targets}")
    if not 0 <= cfg.min_interval_s <= cfg.max_interval_s:
        raise ConfigError("chaos intervals need 0 <= min_interval_s <= max_interval_s")
    rng = random.Random(cfg.seed)
    kinds = list(dict.fromkeys(cfg.targets))[: cfg.kills]
    kinds += [rng.choice(cfg.targets) for _ in range(cfg.kills - len(kinds))]
    rng.shuffle(kinds)
    return [
        PlannedKill(rng.uniform(cfg.min_interval_s, cfg.max_interval_s), kind, rng.randrange(1024))
        for kind in kinds
    ]
