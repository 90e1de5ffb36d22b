"""The data that crosses actor boundaries: token-exact trajectories and their groups.

A `Trajectory` is the exact token sequence an engine saw and produced, never
re-rendered from text. Per token it keeps the loss mask (1 only on generated
tokens), the behavior logprob the engine reported and the policy version that
produced it (-1 where nothing was generated). Everything else (reward, status,
turns, tool use, timings, workers) is per trajectory.

For multimodal envs the tokens hold each image's placeholder as the engine
expanded it (one token per image feature) and `images` the images themselves.

Plain dataclasses over lists: no torch, no numpy, cheap to pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

NO_VERSION = -1


class Status(StrEnum):
    COMPLETED = "completed"
    """The episode ended on its own (final answer or environment end)."""
    TRUNCATED = "truncated"
    """Cut by the turn limit or the token budget: the model's failure, trained on."""
    ABORTED = "aborted"
    """The engine stopped it (worker lost, shutdown): not the model's doing."""
    FAILED = "failed"
    """The environment broke (tool crash/timeout): not scored, not trained on."""

    @property
    def trainable(self) -> bool:
        return self in (Status.COMPLETED, Status.TRUNCATED)


@dataclass
class Turn:
    """One assistant turn inside a trajectory's token sequence."""

    start: int
    """Index of the turn's first generated token in `Trajectory.tokens`."""
    num_generated: int
    num_observation: int
    """Tokens of the environment's reply appended after the turn (0 for the last)."""
    worker_id: str
    finish_reason: str
    generate_s: float
    """Wall time of the turn's generate call: routing, queueing and the engine."""
    env_s: float = 0.0


@dataclass
class Trajectory:
    trajectory_id: str
    group_id: str
    env_id: str
    task_seed: int
    prompt_length: int
    tokens: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    behavior_logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    reward: float = 0.0
    reward_components: dict[str, float] = field(default_factory=dict)
    status: Status = Status.COMPLETED
    failure: str | None = None
    num_tool_calls: int = 0
    num_tool_errors: int = 0
    tool_error_kinds: dict[str, int] = field(default_factory=dict)
    lock_broken: bool = False
    """A worker was lost mid-trajectory and later turns ran elsewhere."""
    timings: dict[str, float] = field(default_factory=dict)
    routed_experts: list[list[list[int]]] | None = None
    """Per generated token, per MoE layer, the expert ids the engine chose."""
    images: list[bytes] = field(default_factory=list)
    """PNG bytes of the images the engine saw (multimodal envs), in the order of
    their placeholders in `tokens`: what a learner feeds the model's processor."""

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if not (len(self.loss_mask) == len(self.behavior_logprobs) == len(self.versions) == n):
            raise ValueError("per-token fields of a trajectory must have one entry per token")

    @property
    def num_generated(self) -> int:
        return sum(self.loss_mask)

    @property
    def generated_versions(self) -> list[int]:
        return [v for v, m in zip(self.versions, self.loss_mask, strict=True) if m]

    @property
    def min_version(self) -> int:
        return min(self.generated_versions, default=NO_VERSION)

    @property
    def max_version(self) -> int:
        return max(self.generated_versions, default=NO_VERSION)

    def staleness(self, learner_version: int) -> int:
        """How many versions behind the learner its oldest generated token is."""
        oldest = self.min_version
        return 0 if oldest == NO_VERSION else learner_version - oldest

    def append(self, ids: list[int], generated: bool, logprobs=None, versions=None) -> None:
        """Append ids; generated ids carry their logprobs and versions."""
        n = len(ids)
        self.tokens.extend(ids)
        self.loss_mask.extend([1 if generated else 0] * n)
        self.behavior_logprobs.extend(logprobs if generated else [0.0] * n)
        self.versions.extend(versions if generated else [NO_VERSION] * n)
        if len(self.behavior_logprobs) != len(self.tokens) or len(self.versions) != len(
            self.tokens
        ):
            raise ValueError("generated ids need one logprob and one version each")


@dataclass
class Group:
    """The n samples of one task: the unit GRPO normalises over and the buffer serves."""

    group_id: str
    env_id: str
    task_seed: int
    trajectories: list[Trajectory]

    @property
    def rewards(self) -> list[float]:
        return [t.reward for t in self.trajectories]

    @property
    def min_version(self) -> int:
        versions = [t.min_version for t in self.trajectories if t.min_version != NO_VERSION]
        return min(versions, default=NO_VERSION)

    def staleness(self, learner_version: int) -> int:
        return max((t.staleness(learner_version) for t in self.trajectories), default=0)


@dataclass
class Batch:
    """Groups handed to the learner for one optimizer step at `learner_version`."""

    groups: list[Group]
    learner_version: int

    @property
    def trajectories(self) -> list[Trajectory]:
        return [t for g in self.groups for t in g.trajectories]
