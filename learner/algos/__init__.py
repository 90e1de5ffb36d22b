"""Algorithms by name: small classes in one dict; the learner picks one from config."""

from __future__ import annotations

from core.config import AlgoConfig, AlgorithmName, ConfigError
from learner.algos.base import Algorithm, PolicyInputs, PolicyLoss
from learner.algos.dapo import DAPO
from learner.algos.grpo import GRPO
from learner.algos.gspo import GSPO
from learner.algos.ppo import PPO

ALGORITHMS: dict[AlgorithmName, type[Algorithm]] = {
    AlgorithmName.grpo: GRPO,
    AlgorithmName.gspo: GSPO,
    AlgorithmName.dapo: DAPO,
    AlgorithmName.ppo: PPO,
}
"""One class per member of AlgorithmName (the choices of `algo.name`; a unit test checks it)."""


def make_algorithm(cfg: AlgoConfig) -> Algorithm:
    if cfg.name not in ALGORITHMS:
        names = ", ".join(ALGORITHMS)
        raise ConfigError(f"algo.name={cfg.name!r} is unknown; choose one of {names}")
    return ALGORITHMS[cfg.name](cfg)


__all__ = ["ALGORITHMS", "Algorithm", "PolicyInputs", "PolicyLoss", "make_algorithm"]
