"""How much memory and CPU time a run uses: the driver and every process it started.

A local Ray cluster, its actors and their vLLM engine processes all descend
from the driver, so the process tree is the run. PSS (proportional set size)
counts shared pages once, so shared libraries and shared memory are not
counted once per process. CPU seconds are counted per role: a process is the
learner's, a rollout worker's or an env pool's when it is that Ray actor (its
process title, `ray::LearnerWorker...`) or descends from one (vLLM's engine core
and workers descend from their rollout worker); the driver is the root; the rest
of the tree is Ray's own (raylet, GCS, idle workers). On a cluster joined with
`ray.address`, processes on other nodes are not in this tree.
"""

from __future__ import annotations

from typing import Any

import psutil

GIB = float(1 << 30)


def tree_memory(root_pid: int | None = None) -> list[tuple[psutil.Process, Any]]:
    """(process, its psutil memory_full_info) for `root_pid` (this process by
    default) and every descendant still there to be read."""
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    found = []
    for process in processes:
        try:
            found.append((process, process.memory_full_info()))
        except psutil.Error:
            continue
    return found


def tree_memory_gib() -> float:
    """PSS of this process's whole tree (the run), in GiB."""
    return sum(info.pss for _, info in tree_memory()) / GIB


ROLE_TITLES = (
    ("learner", "ray::LearnerWorker"),
    ("rollout", "ray::RolloutWorker"),
    ("env", "ray::EnvPool"),
)
"""Process-title prefixes of the run's actors (Ray titles a worker process
`ray::<Class>.<method>` while it runs one, `ray::<Class>` between calls)."""
ROLES = ("driver", "learner", "rollout", "env", "ray")
Roles = dict[int, str]
"""pid -> role, as resolved so far."""


def tree_cpu_s(root_pid: int | None = None) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each role's processes in the tree
    of `root_pid` (this process by default); a process that ended is not counted.
    The tree is found with one scan of /proc (a per-process `children()` scans it
    once per process: ~0.1 s a step on a run's ~25 processes)."""
    totals = dict.fromkeys(ROLES, 0.0)
    try:
        root = psutil.Process(root_pid)
        tree = {p.pid: p for p in (root, *root.children(recursive=True))}
    except psutil.Error:
        return totals
    roles: Roles = {root.pid: "driver"}
    for process in tree.values():
        try:
            role = _role_in(process, tree, roles)
            times = process.cpu_times()
        except psutil.Error:
            continue
        totals[role] += times.user + times.system
    return totals


def _role_in(process: psutil.Process, tree: dict[int, psutil.Process], roles: Roles) -> str:
    """`process`'s role from its parent's (memoised in `roles`, which holds the root's)."""
    if process.pid not in roles:
        parent = tree.get(process.ppid())  # None: its parent left the tree
        parent_role = _role_in(parent, tree, roles) if parent is not None else "ray"
        roles[process.pid] = _role(process, parent_role)
    return roles[process.pid]


def _role(process: psutil.Process, parent_role: str) -> str:
    if parent_role not in ("driver", "ray"):
        return parent_role  # under an actor: its engine processes, its threads' helpers
    title = " ".join(process.cmdline()[:1])
    for role, prefix in ROLE_TITLES:
        if title.startswith(prefix):
            return role
    return "ray"
