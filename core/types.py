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
ROUTING_DTYPES = {"uint8": 1, "uint16": 2}
"""Expert-id types vLLM reports routing in, with their sizes in bytes."""


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
class RoutedExperts:
    """Which experts the engine routed each token to, one row per token (R3).

    `rows[i]` is the routing of the engine forward that ran token i as input:
    `num_layers x top_k` expert ids, C order, as `dtype` bytes (vLLM reports uint8
    when the model has at most 256 experts, else uint16:
    vllm/model_executor/layers/fused_moe/routed_experts_capturer.py:67-68). None
    where no call reported it: the last token of a trajectory (sampled, never run
    through the model: vllm/distributed/aux_output_connector/connector.py:116-133),
    positions that arrived after the last call, and every position of an engine
    that does not return routing.

    Which call's routing a position holds: the rollout agent asks each turn's call
    for routing from the first position still unknown (vLLM's
    `routed_experts_prompt_start`), so position i holds what the first call of the
    trajectory that reported i returned. That is the call that first ran i as input
    (turn 0's prompt; turn t's last generated token and the observation after it,
    in turn t+1's call), or, where that call found i in vLLM's prefix cache, the
    rows vLLM stored when the cached KV block was computed (by whichever request
    computed it first since the last prefix-cache reset, possibly a group sibling
    sharing the prompt: aux_output_connector/worker.py:253-287 reads them back,
    store.py:166,182-183 keeps the first writer). A later call that recomputes i (its
    KV was evicted) does not overwrite it.

    One `bytes` per token (a row of 48 layers x top-8 is 384 bytes): it pickles
    at its raw size without numpy or torch, where nested int lists would cost a
    Python list per layer per token.
    """

    num_layers: int
    top_k: int
    dtype: str = "uint8"
    """numpy name of the expert-id type: uint8 or uint16, as the engine reported."""
    rows: list[bytes | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.dtype not in ROUTING_DTYPES:
            raise ValueError(f"routed experts dtype {self.dtype!r} not in {ROUTING_DTYPES}")
        for row in self.rows:
            self._check(row)

    @property
    def row_nbytes(self) -> int:
        return self.num_layers * self.top_k * ROUTING_DTYPES[self.dtype]

    @property
    def frontier(self) -> int:
        """The first position without routing (len(rows) when all are known)."""
        return next((i for i, row in enumerate(self.rows) if row is None), len(self.rows))

    @property
    def known(self) -> list[int]:
        """Positions whose routing is known, in order."""
        return [i for i, row in enumerate(self.rows) if row is not None]

    def place(self, start: int, rows: list[bytes]) -> None:
        """Record `rows` as the routing of positions start, start+1, ...; positions
        that already hold routing keep it (the earlier call computed them)."""
        if start < 0 or start + len(rows) > len(self.rows):
            raise ValueError(
                f"routing for positions [{start}, {start + len(rows)}) of {len(self.rows)} tokens"
            )
        for offset, row in enumerate(rows):
            self._check(row)
            if self.rows[start + offset] is None:
                self.rows[start + offset] = row

    def _check(self, row: bytes | None) -> None:
        if row is not None and len(row) != self.row_nbytes:
            raise ValueError(
                f"a routing row of {len(row)} bytes; {self.num_layers} layers x top-"
                f"{self.top_k} {self.dtype} is {self.row_nbytes}"
            )


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
    routed_experts: RoutedExperts | None = None
    """Token-aligned MoE routing from the engine (R3): one row per token of `tokens`,
    None where no engine call reported it. See `RoutedExperts` for which call's
    routing each position holds."""
    images: list[bytes] = field(default_factory=list)
    """PNG bytes of the images the engine saw (multimodal envs), in the order of
    their placeholders in `tokens`: what a learner feeds the model's processor."""

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if not (len(self.loss_mask) == len(self.behavior_logprobs) == len(self.versions) == n):
            raise ValueError("per-token fields of a trajectory must have one entry per token")
        if self.routed_experts is not None and len(self.routed_experts.rows) != n:
            raise ValueError(
                f"routed experts have {len(self.routed_experts.rows)} rows for {n} tokens"
            )

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
        if self.routed_experts is not None:
            self.routed_experts.rows.extend([None] * n)  # unknown until a call reports them
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
