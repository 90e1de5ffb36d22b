"""GRPO: group-normalised advantages, token-level clipped surrogate, token mean."""

from __future__ import annotations

from learner.algos.base import ClippedSurrogate


class GRPO(ClippedSurrogate):
    name = "grpo"
