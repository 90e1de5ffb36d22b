"""Metrics that summarise trajectories: rewards, tool use, statuses, lengths, versions."""

from __future__ import annotations

from collections import Counter

from core.types import Group, Status


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
