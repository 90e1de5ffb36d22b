"""Metrics that summarise a step, built from records: trajectories (rewards, tool
use, statuses, lengths, versions), the rollout fleet (per-worker load, speculation,
skew, from EngineStats and PoolStats), the step's clock, and the record of what
was trained (TrainedRecord: which versions produced each trained trajectory)."""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass

from core.records import EngineStats, PoolStats
from core.types import Batch, Group, Status
from orchestrator.resources import tree_cpu_s, tree_memory_gib
from rollout.router import placement_skew


def batch_metrics(groups: list[Group], learner_version: int) -> dict[str, float]:
    trajs = [t for g in groups for t in g.trajectories]
    if not trajs:
        return {}
    n = len(trajs)
    metrics = {
        "rollout/reward_mean": sum(t.reward for t in trajs) / n,
        "rollout/reward_max": max(t.reward for t in trajs),
        "rollout/trajectories": float(n),
        "rollout/turns_mean": sum(len(t.turns) for t in trajs) / n,
        "rollout/generated_tokens_mean": sum(t.num_generated for t in trajs) / n,
        "rollout/sequence_tokens_mean": sum(len(t.tokens) for t in trajs) / n,
        "rollout/tool_use_rate": sum(t.num_tool_calls > 0 for t in trajs) / n,
        "rollout/lock_broken": float(sum(t.lock_broken for t in trajs)),
        "rollout/versions_per_trajectory": sum(len(set(t.generated_versions)) for t in trajs) / n,
        "rollout/staleness_max": float(max(t.staleness(learner_version) for t in trajs)),
        "env/tool_calls_mean": sum(t.num_tool_calls for t in trajs) / n,
        "env/tool_errors_mean": sum(t.num_tool_errors for t in trajs) / n,
        "env/episode_s_mean": sum(t.timings.get("episode_s", 0.0) for t in trajs) / n,
        "env/env_s_mean": sum(t.timings.get("env_s", 0.0) for t in trajs) / n,
        "rollout/zero_variance_groups": float(sum(len(set(g.rewards)) == 1 for g in groups)),
    }
    statuses = Counter(t.status for t in trajs)
    for status in Status:
        metrics[f"rollout/status_{status.value}"] = statuses.get(status, 0) / n
    components: dict[str, list[float]] = {}
    for t in trajs:
        for name, value in t.reward_components.items():
            components.setdefault(name, []).append(value)
    for name, values in components.items():
        metrics[f"reward/{name}"] = sum(values) / len(values)
    if "correct" in components:
        metrics["rollout/correct_rate"] = sum(components["correct"]) / n
    return metrics


def fleet_metrics(
    worker_stats: dict[str, EngineStats], pool_stats: list[PoolStats]
) -> dict[str, float]:
    """Per rollout worker: tokens generated, queue depth, prefix-cache hits and
    speculative acceptance; across them: placement skew (max/mean tokens placed) and
    speculative acceptance, all-time and at the newest version."""
    placed: dict[str, float] = {}
    for pool in pool_stats:
        for worker_id, load in pool.workers.items():
            if load.healthy:
                placed[worker_id] = placed.get(worker_id, 0.0) + load.placed_tokens
    metrics = {"rollout/placement_skew": placement_skew(list(placed.values()))}
    for worker_id, stats in worker_stats.items():
        prefix = f"worker/{worker_id}"
        metrics[f"{prefix}/generated_tokens"] = float(stats.generated_tokens)
        metrics[f"{prefix}/queue_depth"] = float(stats.in_flight)
        metrics[f"{prefix}/version"] = float(stats.version)
        metrics[f"{prefix}/prefix_cache_hit"] = stats.prefix_cache_hit
        metrics |= _speculation(prefix, stats)
    drafted = sum(s.spec_drafted for s in worker_stats.values())
    if drafted:
        accepted = sum(s.spec_accepted for s in worker_stats.values())
        metrics["spec/acceptance_rate"] = accepted / drafted
    return metrics | version_acceptance(list(worker_stats.values()))


def version_acceptance(worker_stats: list[EngineStats]) -> dict[str, float]:
    """`spec/version_acceptance_rate`: accepted / drafted tokens over every worker's
    requests that finished under the newest weight version any drafts were made
    with, and that version (`spec/version`): how well the drafter follows the policy
    as it trains, version by version (the all-time rate hides it)."""
    per_version: dict[int, list[int]] = {}
    for stats in worker_stats:
        for version, (drafted, accepted) in stats.spec_by_version.items():
            totals = per_version.setdefault(version, [0, 0])
            totals[0] += drafted
            totals[1] += accepted
    drafted_versions = [v for v, (drafted, _) in per_version.items() if drafted]
    if not drafted_versions:
        return {}
    newest = max(drafted_versions)
    drafted, accepted = per_version[newest]
    return {"spec/version": float(newest), "spec/version_acceptance_rate": accepted / drafted}


def _speculation(prefix: str, stats: EngineStats) -> dict[str, float]:
    """Acceptance rate (accepted / drafted tokens) and mean accepted length
    (tokens emitted per decode step: the accepted drafts plus the target's own)."""
    if not stats.spec_drafted:
        return {}
    return {
        f"{prefix}/spec_acceptance_rate": stats.spec_accepted / stats.spec_drafted,
        f"{prefix}/spec_mean_accepted_len": 1.0 + stats.spec_accepted / max(1, stats.spec_steps),
    }


MEMORY_EVERY_S = 10.0
"""How often the run's PSS is read: every process's smaps_rollup costs the driver
~0.1 s on a run's tree (vLLM maps a lot), too much for every sub-second step; a
step in between reports the latest reading."""


class StepClock:
    """Step time, rollout throughput over the step, elapsed time, memory, and where the
    step's CPU time went: `perf/cpu_s/<role>` (driver, learner, rollout, env, ray;
    orchestrator.resources) and `perf/cpu_busy`, the share of this machine's usable
    cores they kept busy. Memory (PSS) is read every MEMORY_EVERY_S."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.last_tokens = 0
        self.last_cpu = tree_cpu_s()
        self.cores = len(os.sched_getaffinity(0))
        self.memory_gib = 0.0
        self.memory_at = -math.inf

    def memory(self, now: float) -> float:
        """The run's PSS, read again once MEMORY_EVERY_S have passed since the last
        reading (else that reading)."""
        if now - self.memory_at >= MEMORY_EVERY_S:
            self.memory_gib, self.memory_at = tree_memory_gib(), now
        return self.memory_gib

    def tick(self, generated_tokens: int) -> dict[str, float]:
        now = time.perf_counter()
        step_s = now - self.last
        metrics = {
            "perf/rollout_tokens_per_s": (generated_tokens - self.last_tokens) / step_s,
            "perf/step_s": step_s,
            "perf/elapsed_s": now - self.started,
            "perf/memory_gib": self.memory(now),
        }
        cpu = tree_cpu_s()
        spent = {role: max(0.0, cpu[role] - self.last_cpu.get(role, 0.0)) for role in cpu}
        metrics |= {f"perf/cpu_s/{role}": seconds for role, seconds in spent.items()}
        metrics["perf/cpu_busy"] = sum(spent.values()) / (step_s * self.cores)
        self.last, self.last_tokens, self.last_cpu = now, generated_tokens, cpu
        return metrics


@dataclass(frozen=True)
class TrainedRecord:
    """One trajectory handed to the learner, with the versions that produced it."""

    trajectory_id: str
    min_version: int
    max_version: int
    learner_version: int
    turn_versions: tuple[tuple[int, ...], ...]
    """The distinct versions of each turn's generated tokens."""
    workers: tuple[str, ...]
    """The worker of each turn."""
    lock_broken: bool


def trained_records(batch: Batch) -> list[TrainedRecord]:
    return [
        TrainedRecord(
            t.trajectory_id,
            t.min_version,
            t.max_version,
            batch.learner_version,
            tuple(
                tuple(sorted(set(t.versions[u.start : u.start + u.num_generated]))) for u in t.turns
            ),
            tuple(u.worker_id for u in t.turns),
            t.lock_broken,
        )
        for t in batch.trajectories
        if t.status.trainable
    ]
