"""DAPO: GRPO with clip-higher (a wider upper clip keeps low-probability tokens
explorable) and token-level normalisation over the whole batch. Its dynamic
sampling (dropping zero-variance groups) belongs to the replay buffer."""

from __future__ import annotations

from learner.algos.base import ClippedSurrogate


class DAPO(ClippedSurrogate):
    name = "dapo"
    default_clip = (0.2, 0.28)
    default_agg = "token-mean"
