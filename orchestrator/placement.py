"""Placement as a plan: which Ray resources each role of a run reserves, in which
placement group and bundle each actor sits, whether the cluster can hold it all,
and, on CPU, which cores each actor gets.

Pure functions of the config and of what the cluster reports (its resources, the
node each bundle landed on): Ray is not imported here. orchestrator.actors turns a
plan into placement groups and into the options every actor is created with.

- rollout: one bundle per worker ({GPU: rollout.gpus_per_worker} on GPUs; a worker's
  tensor-parallel GPUs are one bundle, so one node), PACK;
- learner: one bundle per rank ({GPU: learner.gpus_per_rank}), PACK: ranks fill a
  node before the next;
- env: one CPU bundle per pool, SPREAD over the nodes (pools stay light: they ask 0
  CPUs of their bundle, which reserves CPU_FLOOR).
`placement=colocated` has no learner group: rank r sits in rollout bundle r and each
asks COLOCATED_SHARE of its GPU, as the rollout worker there does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum

from core.config import Config
from core.records import Placement

CPU_FLOOR = 0.01
"""CPUs a bundle reserves when its actors ask none: Ray refuses a bundle whose
resources are all 0 (ray/util/placement_group.py:497-503, `_validate_bundles`)."""
COLOCATED_SHARE = 0.5
"""The share of a bundle's GPU each of a colocated rollout worker and learner rank asks:
Ray gives both the same GPU id (fractions of one GPU never straddle two)."""
EPSILON = 1e-9


class Role(StrEnum):
    rollout = "rollout"
    learner = "learner"
    env = "env"


class PlacementError(RuntimeError):
    """The cluster cannot hold what the config asks for; the message names the role and
    the missing resources in one line."""


@dataclass(frozen=True)
class Bundle:
    cpus: float
    gpus: int = 0
    extra: tuple[tuple[str, float], ...] = ()
    """Custom Ray resources (ray.rollout_resources / ray.learner_resources)."""

    def resources(self) -> dict[str, float]:
        """The bundle as Ray takes it (zero entries left out)."""
        named = (("CPU", self.cpus), ("GPU", float(self.gpus)), *self.extra)
        return {k: v for k, v in named if v > 0}


@dataclass(frozen=True)
class GroupPlan:
    """One placement group: its bundles and strategy, and a label for messages."""

    name: Role
    bundles: tuple[Bundle, ...]
    strategy: str
    label: str

    def demand(self) -> dict[str, float]:
        total: dict[str, float] = defaultdict(float)
        for bundle in self.bundles:
            for key, value in bundle.resources().items():
                total[key] += value
        return dict(total)


@dataclass(frozen=True)
class Seat:
    """Where one actor sits: a bundle of a group, and what it asks of that bundle."""

    group: Role
    bundle: int
    num_cpus: float
    num_gpus: float


@dataclass(frozen=True)
class PlacementPlan:
    groups: tuple[GroupPlan, ...]
    rollout: tuple[Seat, ...]
    learner: tuple[Seat, ...]
    env: tuple[Seat, ...]

    def seat(self, role: Role, index: int) -> Seat:
        seats = getattr(self, role.value)
        if not 0 <= index < len(seats):
            raise PlacementError(f"no {role} seat {index}: the plan has {len(seats)}")
        return seats[index]

    def group(self, name: Role) -> GroupPlan:
        return next(g for g in self.groups if g.name == name)

    def bundle(self, role: Role, index: int) -> Bundle:
        """The bundle actor `index` of `role` sits in."""
        seat = self.seat(role, index)
        return self.group(seat.group).bundles[seat.bundle]


def plan(cfg: Config) -> PlacementPlan:
    """The placement groups and seats `cfg` asks for."""
    workers, ranks, pools = cfg.rollout.num_workers, cfg.learner.num_ranks, cfg.env.num_pools
    rollout_gpus, rank_gpus = cfg.rollout.gpus_per_worker, cfg.learner.gpus_per_rank
    worker_bundle = Bundle(
        max(cfg.rollout.num_cpus, CPU_FLOOR), rollout_gpus, _extra(cfg.ray.rollout_resources)
    )
    env = GroupPlan(Role.env, (Bundle(CPU_FLOOR),) * pools, "SPREAD", f"env ({pools} pools)")
    env_seats = tuple(Seat(Role.env, i, 0.0, 0.0) for i in range(pools))
    if cfg.placement == "colocated":
        share = COLOCATED_SHARE * rollout_gpus
        label = f"rollout+learner colocated ({workers} workers, {ranks} ranks x {rollout_gpus} GPU)"
        shared = GroupPlan(Role.rollout, (worker_bundle,) * max(workers, ranks), "PACK", label)
        return PlacementPlan(
            (shared, env),
            tuple(Seat(Role.rollout, i, cfg.rollout.num_cpus, share) for i in range(workers)),
            tuple(Seat(Role.rollout, r, 0.0, share) for r in range(ranks)),
            env_seats,
        )
    rollout = GroupPlan(
        Role.rollout,
        (worker_bundle,) * workers,
        "PACK",
        f"rollout ({workers} workers x {rollout_gpus} GPU)",
    )
    learner = GroupPlan(
        Role.learner,
        (Bundle(CPU_FLOOR, rank_gpus, _extra(cfg.ray.learner_resources)),) * ranks,
        "PACK",
        f"learner ({ranks} ranks x {rank_gpus} GPU)",
    )
    return PlacementPlan(
        (rollout, learner, env),
        tuple(Seat(Role.rollout, i, cfg.rollout.num_cpus, rollout_gpus) for i in range(workers)),
        tuple(Seat(Role.learner, r, 0.0, rank_gpus) for r in range(ranks)),
        env_seats,
    )


def _extra(resources: dict[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((str(k), float(v)) for k, v in dict(resources).items()))


def shortfall(
    placement: PlacementPlan, total: dict[str, float], nodes: list[dict[str, float]]
) -> str | None:
    """One line naming the first group the cluster cannot hold and what is missing
    (`total`: ray.cluster_resources(); `nodes`: each alive node's resources), or None."""
    left = dict(total)
    for group in placement.groups:
        need = group.demand()
        missing = {k: v - left.get(k, 0.0) for k, v in need.items() if v > left.get(k, 0.0)}
        if any(v > EPSILON for v in missing.values()):
            return (
                f"cannot place {group.label}: missing {fmt(missing)} (needs {fmt(need)}; "
                f"the Ray cluster has {fmt(left)} left of {fmt(total)})"
            )
        for bundle in set(group.bundles):
            if not any(_fits(bundle.resources(), node) for node in nodes):
                return (
                    f"cannot place {group.label}: one bundle needs {fmt(bundle.resources())} "
                    f"on a single node, and no node has it (largest: {fmt(_largest(nodes))})"
                )
        left = {k: v - need.get(k, 0.0) for k, v in left.items()}
    return None


def pinned_cores(
    cfg: Config, rollout_nodes: list[str], learner_nodes: list[str], node_cores: dict[str, int]
) -> tuple[list[int | None], list[tuple[int, ...] | None]]:
    """On CPU, the core each rollout worker's engine is bound to and the cores each
    learner rank may use, from the node each sits on and the nodes' core counts.

    Workers on a node take its cores in order (wrapping when there are more workers
    than cores). Under split placement the ranks on that node share out the cores no
    worker took (all of them when none is left), so the two planes overlap without
    contending; with trainer.mode=sync nothing overlaps (generation and the learner
    step take turns), so the ranks share out all of their node's cores. Colocated
    ranks are not pinned. GPU roles are not pinned, nor workers when
    rollout.bind_cores is off.
    """
    bind = cfg.rollout.bind_cores and cfg.rollout.gpus_per_worker == 0
    taken: dict[str, list[int]] = defaultdict(list)
    workers: list[int | None] = []
    for node in rollout_nodes:
        core = len(taken[node]) % max(1, node_cores.get(node, 1))
        taken[node].append(core)
        workers.append(core if bind else None)
    if cfg.placement != "split" or cfg.learner.gpus_per_rank > 0:
        return workers, [None] * len(learner_nodes)
    overlapping = bind and cfg.trainer.mode != "sync"
    return workers, _learner_cores(learner_nodes, node_cores, taken if overlapping else {})


def borrowable_cores(
    cfg: Config, rollout_nodes: list[str], learner_nodes: list[str], node_cores: dict[str, int]
) -> list[tuple[int, ...]]:
    """The cores each learner rank may borrow while the rollout engines bound to them
    idle (learner.borrow_idle_cores): those the engines on its node took, shared
    out among the node's ranks as `pinned_cores` shares the free ones. None where
    the ranks are not pinned apart from the engines (sync mode, colocated, GPUs,
    unbound engines) or no engine shares their node."""
    workers, ranks = pinned_cores(cfg, rollout_nodes, learner_nodes, node_cores)
    if not cfg.learner.borrow_idle_cores or cfg.trainer.mode == "sync" or None in workers:
        return [()] * len(learner_nodes)
    taken: dict[str, list[int]] = defaultdict(list)
    for node, core in zip(rollout_nodes, workers, strict=True):
        if core not in taken[node]:
            taken[node].append(core)
    spare: list[tuple[int, ...]] = [()] * len(learner_nodes)
    for node, members in _ranks_by_node(learner_nodes).items():
        engines = sorted(taken.get(node, []))
        for order, rank in enumerate(members):
            if ranks[rank] is None:
                continue  # not pinned (colocated, GPUs): it runs where it likes anyway
            own = set(ranks[rank])
            mine = engines if len(engines) < len(members) else engines[order :: len(members)]
            spare[rank] = tuple(c for c in mine if c not in own)
    return spare


def _ranks_by_node(learner_nodes: list[str]) -> dict[str, list[int]]:
    on_node: dict[str, list[int]] = defaultdict(list)
    for rank, node in enumerate(learner_nodes):
        on_node[node].append(rank)
    return on_node


def _learner_cores(
    learner_nodes: list[str], node_cores: dict[str, int], taken: dict[str, list[int]]
) -> list[tuple[int, ...] | None]:
    on_node = _ranks_by_node(learner_nodes)
    cores: list[tuple[int, ...] | None] = [None] * len(learner_nodes)
    for node, ranks in on_node.items():
        every = list(range(node_cores.get(node, 1)))
        free = [c for c in every if c not in taken.get(node, [])] or every
        shared = len(free) < len(ranks)
        for order, rank in enumerate(ranks):
            cores[rank] = tuple(free if shared else free[order :: len(ranks)])
    return cores


def _fits(need: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) + EPSILON >= v for k, v in need.items())


def _largest(nodes: list[dict[str, float]]) -> dict[str, float]:
    keys = ("CPU", "GPU")
    return {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in keys}


RAY_BOOKKEEPING = ("memory", "object_store_memory", "node:", "accelerator_type:", "bundle_group")
"""Resources every Ray node reports that no config asks for: left out of messages (so
are placement groups' own, `CPU_group_<id>`)."""


def fmt(resources: dict[str, float]) -> str:
    """Resources as a log line shows them (`0.01 CPU, 1 GPU`), Ray's bookkeeping left out."""
    shown = [
        f"{v:g} {k}"
        for k, v in sorted(resources.items())
        if not k.startswith(RAY_BOOKKEEPING) and "_group_" not in k
    ]
    return ", ".join(shown) or "nothing"


def table(rows: list[tuple[str, str, Placement]]) -> str:
    """The start-up placement table: role, actor, node (IP / short node id), and the
    GPU ids Ray assigned it, else its cores."""
    lines = [("role", "actor", "node", "devices")]
    for role, actor, where in rows:
        devices = f"GPU {','.join(where.gpu_ids)}" if where.gpu_ids else _cores(where.cores)
        lines.append((role, actor, f"{where.node_ip} / {where.node_id[:8]}", devices))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True))
        + "  "
        + line[3]
        for line in lines
    )


def _cores(cores: tuple[int, ...]) -> str:
    return f"cores {','.join(str(c) for c in cores)}" if cores else "cores ?"


def off_learner_node(rollout_nodes: list[str], learner_nodes: list[str]) -> list[int]:
    """Indices of the rollout workers whose node is not learner rank 0's."""
    if not learner_nodes:
        return []
    return [i for i, node in enumerate(rollout_nodes) if node != learner_nodes[0]]
