"""The learner's LR multiplier: linear warm-up, then constant or cosine decay."""

from __future__ import annotations

import pytest

from core.config import LearnerConfig
from learner.setup import lr_factor


def test_warmup_then_constant():
    cfg = LearnerConfig(lr_warmup_steps=4)
    assert [lr_factor(cfg, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_decays_to_the_floor_and_stays():
    cfg = LearnerConfig(
        lr_warmup_steps=2, lr_schedule="cosine", lr_decay_steps=12, lr_min_ratio=0.1
    )
    assert lr_factor(cfg, 0) == 0.5 and lr_factor(cfg, 1) == 1.0
    assert lr_factor(cfg, 6) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert lr_factor(cfg, 11) == pytest.approx(0.1) and lr_factor(cfg, 50) == pytest.approx(0.1)
    values = [lr_factor(cfg, s) for s in range(1, 12)]
    assert values == sorted(values, reverse=True)
