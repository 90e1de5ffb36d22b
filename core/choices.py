"""The choices of a run's config: one StrEnum per field that takes one of a few names.

The schemas in core.config type their fields with these, so Hydra/OmegaConf refuse a
value that is not a member while composing, with the key's name
(`rollout.lock=maybe` -> "Invalid value 'maybe', expected one of [trajectory, turn,
none]"). OmegaConf looks an enum member up by its *name*
(omegaconf/nodes.py:487-491, `enum_type[value]`) and prints it by its name
(`--cfg job`, OmegaConf.to_yaml), so every member's name is its value: what a user
types, what the README documents and what the code compares with are one string.
A StrEnum member equals its value, so `cfg.rollout.lock == "turn"` keeps working
wherever a field is compared with a string.

What each choice means is documented at its field in core.config.
"""

from __future__ import annotations

from enum import StrEnum


class Choice(StrEnum):
    """Base of every config choice (members' names are their values; the unit tests
    check it for every subclass)."""


class TinyArchitecture(Choice):
    """`model.tiny.architecture`: which model family the tiny policy is."""

    qwen3 = "qwen3"
    qwen3_5 = "qwen3_5"
    idefics3 = "idefics3"


class CurriculumWeighting(Choice):
    """`curriculum.weighting`: how active tasks are drawn."""

    none = "none"
    mid = "mid"


class RolloutLock(Choice):
    """`rollout.lock`: when weight updates may land in a multi-turn rollout."""

    trajectory = "trajectory"
    turn = "turn"
    none = "none"


class WeightTransport(Choice):
    """`rollout.weight_transport`: how a weight version reaches a rollout worker."""

    auto = "auto"
    shm = "shm"
    object_store = "object_store"


class SpeculativeMethod(Choice):
    """`rollout.speculative.method`."""

    none = "none"
    ngram = "ngram"
    draft_model = "draft_model"
    mtp = "mtp"


# `async` is a keyword and `token-mean` no identifier: these two are built by name
# (Enum's functional API; StrEnum makes each value its name).
TrainerMode = Choice("TrainerMode", ["async", "sync"], module=__name__)
"""`trainer.mode`."""

LossAggregation = Choice(
    "LossAggregation",
    ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"],
    module=__name__,
)
"""`algo.loss_agg`: how per-token losses become the batch's loss."""


class AlgorithmName(Choice):
    """`algo.name`: the keys of learner.algos.ALGORITHMS (checked by a unit test)."""

    grpo = "grpo"
    gspo = "gspo"
    dapo = "dapo"
    ppo = "ppo"


class OffPolicy(Choice):
    """`algo.off_policy`: how samples from older or different policies are corrected."""

    behavior = "behavior"
    tis = "tis"
    mis = "mis"


class AdvantageStd(Choice):
    """`algo.adv_std`: which standard deviation divides group-centred rewards."""

    sample = "sample"
    """Bessel-corrected (n-1), as verl and TRL compute it."""
    population = "population"
    """Divided by n: advantages smaller by sqrt((n-1)/n) (0.94 at n=8)."""


class Precision(Choice):
    """`learner.precision`."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp8 = "fp8"
    fp8_bf16 = "fp8_bf16"


class LrSchedule(Choice):
    """`learner.lr_schedule`: the learning rate after the linear warm-up."""

    constant = "constant"
    cosine = "cosine"


class WandbMode(Choice):
    """`logger.wandb.mode`: wandb.init's own mode names."""

    offline = "offline"
    online = "online"
    disabled = "disabled"


class PlacementMode(Choice):
    """`placement`: whether rollout workers and learner ranks share devices."""

    split = "split"
    """Disjoint devices (GPUs; cores on CPU): the asynchronous default."""
    colocated = "colocated"
    """Learner ranks share the rollout workers' GPUs (fractional requests on the same
    bundles). vLLM does not yet sleep while the learner steps; on CPU no different
    from sharing cores."""
