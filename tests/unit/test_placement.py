"""The placement plan (orchestrator.placement): bundles and seats per role for split
and colocated placement on GPUs and on CPU, the one-line refusal of what a cluster
cannot hold, the cores CPU actors are pinned to, and the start-up table; plus the
config rules and knobs around it (no Ray started here)."""

from __future__ import annotations

import os

import pytest

from core.config import Config, ConfigError, validate
from core.records import Placement
from learner.cores import bind_threads
from learner.setup import pin_cores, rendezvous_address
from orchestrator.checkpoint import checkpoint_root
from orchestrator.placement import (
    CPU_FLOOR,
    Bundle,
    Role,
    Seat,
    borrowable_cores,
    off_learner_node,
    pinned_cores,
    plan,
    shortfall,
    table,
)
from rollout.engine_args import vllm_args


def _cfg(workers=2, ranks=1, pools=2, rollout_gpus=0, rank_gpus=0, placement="split") -> Config:
    cfg = Config()
    cfg.trainer.mode = "sync" if placement == "colocated" else cfg.trainer.mode
    cfg.rollout.num_workers, cfg.learner.num_ranks, cfg.env.num_pools = workers, ranks, pools
    cfg.rollout.gpus_per_worker, cfg.learner.gpus_per_rank = rollout_gpus, rank_gpus
    cfg.placement = placement
    return cfg


def test_split_on_gpus_gives_each_role_its_own_group_and_gpus():
    placed = plan(_cfg(workers=2, ranks=2, rollout_gpus=1, rank_gpus=1))
    rollout, learner, env = (placed.group(r) for r in Role)
    assert rollout.bundles == (Bundle(CPU_FLOOR, 1),) * 2 and rollout.strategy == "PACK"
    assert learner.bundles == (Bundle(CPU_FLOOR, 1),) * 2 and learner.strategy == "PACK"
    assert env.bundles == (Bundle(CPU_FLOOR),) * 2 and env.strategy == "SPREAD"
    assert placed.rollout == (Seat(Role.rollout, 0, 0, 1), Seat(Role.rollout, 1, 0, 1))
    assert placed.learner == (Seat(Role.learner, 0, 0, 1), Seat(Role.learner, 1, 0, 1))
    assert placed.env == (Seat(Role.env, 0, 0, 0), Seat(Role.env, 1, 0, 0))
    assert rollout.demand() == {"CPU": 2 * CPU_FLOOR, "GPU": 2.0}


def test_gpus_per_worker_above_one_is_one_bundle_and_vllm_tensor_parallelism():
    cfg = _cfg(workers=2, rollout_gpus=4, rank_gpus=1)
    placed = plan(cfg)
    assert placed.group(Role.rollout).bundles == (Bundle(CPU_FLOOR, 4),) * 2
    assert placed.seat(Role.rollout, 1).num_gpus == 4
    args = vllm_args("/m", cfg.rollout, "bfloat16", seed=0)
    assert (args["tensor_parallel_size"], args["distributed_executor_backend"]) == (4, "mp")
    assert "tensor_parallel_size" not in vllm_args("/m", Config().rollout, "float32", seed=0)


def test_colocated_ranks_share_the_rollout_bundles_gpus():
    placed = plan(_cfg(workers=2, ranks=2, rollout_gpus=1, rank_gpus=1, placement="colocated"))
    assert [g.name for g in placed.groups] == [Role.rollout, Role.env]
    assert placed.group(Role.rollout).bundles == (Bundle(CPU_FLOOR, 1),) * 2
    assert placed.rollout == (Seat(Role.rollout, 0, 0, 0.5), Seat(Role.rollout, 1, 0, 0.5))
    assert placed.learner == (Seat(Role.rollout, 0, 0, 0.5), Seat(Role.rollout, 1, 0, 0.5))


def test_on_cpu_bundles_hold_cpus_only_and_rollout_num_cpus():
    cfg = _cfg(workers=1, ranks=1, pools=1)
    placed = plan(cfg)
    assert all(b.gpus == 0 for g in placed.groups for b in g.bundles)
    assert placed.group(Role.rollout).bundles[0].resources() == {"CPU": CPU_FLOOR}
    cfg.rollout.num_cpus = 1
    placed = plan(cfg)
    assert placed.group(Role.rollout).bundles[0].resources() == {"CPU": 1}
    assert placed.seat(Role.rollout, 0).num_cpus == 1
    with pytest.raises(RuntimeError, match="no rollout seat 1"):
        placed.seat(Role.rollout, 1)


NODES = [{"CPU": 2.0}, {"CPU": 1.0, "GPU": 2.0}, {"CPU": 1.0, "GPU": 1.0}]
TOTAL = {"CPU": 4.0, "GPU": 3.0}


def test_a_plan_the_cluster_holds_passes():
    assert shortfall(plan(_cfg(rollout_gpus=1, rank_gpus=1)), TOTAL, NODES) is None


def test_too_many_gpus_names_the_role_and_what_is_missing():
    line = shortfall(plan(_cfg(ranks=2, rollout_gpus=1, rank_gpus=1)), TOTAL, NODES)
    assert line == (
        "cannot place learner (2 ranks x 1 GPU): missing 1 GPU (needs 0.02 CPU, 2 GPU; "
        "the Ray cluster has 3.98 CPU, 1 GPU left of 4 CPU, 3 GPU)"
    )
    line = shortfall(plan(_cfg(rollout_gpus=1)), {"CPU": 2.0}, [{"CPU": 2.0}])
    assert line.startswith("cannot place rollout (2 workers x 1 GPU): missing 2 GPU")


def test_custom_resources_go_into_each_roles_bundles_and_the_refusal_names_them():
    cfg = _cfg(workers=2)
    cfg.ray.rollout_resources, cfg.ray.learner_resources = {"rollout_node": 1}, {"trainer": 0.5}
    placed = plan(cfg)
    assert (
        placed.group(Role.rollout).bundles == (Bundle(CPU_FLOOR, 0, (("rollout_node", 1.0),)),) * 2
    )
    assert placed.group(Role.learner).bundles[0].resources() == {"CPU": CPU_FLOOR, "trainer": 0.5}
    assert placed.group(Role.env).bundles == (Bundle(CPU_FLOOR),) * 2  # pools go anywhere
    nodes = [{"CPU": 2.0, "rollout_node": 1.0}, {"CPU": 2.0, "trainer": 1.0}]
    total = {"CPU": 4.0, "rollout_node": 1.0, "trainer": 1.0, "CPU_group_ab12": 1.0}
    line = shortfall(placed, total, nodes)
    assert line.startswith("cannot place rollout (2 workers x 0 GPU): missing 1 rollout_node")
    assert "_group_" not in line
    cfg.rollout.num_workers = 1
    assert shortfall(plan(cfg), total, nodes) is None


def test_a_bundle_no_single_node_holds_is_refused():
    line = shortfall(plan(_cfg(workers=1, rollout_gpus=3)), TOTAL, NODES)
    assert line == (
        "cannot place rollout (1 workers x 3 GPU): one bundle needs 0.01 CPU, 3 GPU on a "
        "single node, and no node has it (largest: 2 CPU, 2 GPU)"
    )


def test_split_cpu_placement_pins_rollout_and_learner_to_disjoint_cores():
    one = _cfg(workers=1, ranks=1)
    assert pinned_cores(one, ["a"], ["a"], {"a": 2}) == ([0], [(1,)])
    four = _cfg(workers=2, ranks=2)
    assert pinned_cores(four, ["a", "a"], ["a", "a"], {"a": 4}) == ([0, 1], [(2,), (3,)])
    # no core left on the node: the ranks share all of them (split cannot be honoured)
    assert pinned_cores(four, ["a", "a"], ["a"], {"a": 2}) == ([0, 1], [(0, 1)])
    # a rank alone on its node takes that node's cores
    assert pinned_cores(one, ["a"], ["b"], {"a": 2, "b": 3}) == ([0], [(0, 1, 2)])


def test_sync_mode_gives_the_learner_every_core_as_generation_and_steps_take_turns():
    one = _cfg(workers=1, ranks=1)
    one.trainer.mode = "sync"
    assert pinned_cores(one, ["a"], ["a"], {"a": 2}) == ([0], [(0, 1)])
    four = _cfg(workers=2, ranks=2)
    four.trainer.mode = "sync"
    assert pinned_cores(four, ["a", "a"], ["a", "a"], {"a": 4}) == ([0, 1], [(0, 2), (1, 3)])


def test_colocated_gpus_or_unbound_change_the_pinning():
    colocated = _cfg(workers=1, ranks=1, placement="colocated")
    assert pinned_cores(colocated, ["a"], ["a"], {"a": 2}) == ([0], [None])
    on_gpus = _cfg(workers=1, ranks=1, rollout_gpus=1, rank_gpus=1)
    assert pinned_cores(on_gpus, ["a"], ["a"], {"a": 2}) == ([None], [None])
    unbound = _cfg(workers=1, ranks=1)
    unbound.rollout.bind_cores = False
    assert pinned_cores(unbound, ["a"], ["a"], {"a": 2}) == ([None], [(0, 1)])


def test_async_ranks_may_borrow_the_cores_of_the_engines_on_their_node():
    one = _cfg(workers=1, ranks=1)
    assert borrowable_cores(one, ["a"], ["a"], {"a": 2}) == [(0,)]
    four = _cfg(workers=2, ranks=2)
    assert borrowable_cores(four, ["a", "a"], ["a", "a"], {"a": 4}) == [(0,), (1,)]
    # two engines, one rank: it may take both; a rank alone on its node, none
    assert borrowable_cores(four, ["a", "a"], ["a", "b"], {"a": 4, "b": 2}) == [(0, 1), ()]
    # the ranks already share the engines' cores (none left over): nothing more to take
    assert borrowable_cores(four, ["a", "a"], ["a"], {"a": 2}) == [()]


def test_nothing_to_borrow_in_sync_mode_unbound_colocated_or_when_off():
    sync = _cfg(workers=1, ranks=1)
    sync.trainer.mode = "sync"
    unbound = _cfg(workers=1, ranks=1)
    unbound.rollout.bind_cores = False
    colocated = _cfg(workers=1, ranks=1, placement="colocated")
    off = _cfg(workers=1, ranks=1)
    off.learner.borrow_idle_cores = False
    for cfg in (sync, unbound, colocated, off):
        assert borrowable_cores(cfg, ["a"], ["a"], {"a": 2}) == [()]


def test_a_rank_binds_itself_to_its_cores_and_threads_follow():
    before = os.sched_getaffinity(0)
    core = min(before)
    try:
        assert pin_cores((core,), threads=2) == 1
        assert os.sched_getaffinity(0) == {core}
        assert pin_cores(None, threads=2) == 2
        assert pin_cores((10_000,), threads=3) == 3  # not a core here: left unpinned
        assert os.sched_getaffinity(0) == {core}
    finally:
        bind_threads(before, before)  # every thread, as pin_cores bound them


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"rank_gpus": 2}, r"learner.gpus_per_rank must be 0 \(CPU\) or 1"),
        ({"rollout_gpus": 1, "placement": "colocated"}, "placement=colocated shares each GPU"),
        ({"rollout_gpus": 2, "rank_gpus": 2, "placement": "colocated"}, "gpus_per_rank must"),
        ({"rollout_gpus": -1}, "rollout.gpus_per_worker must be >= 0"),
    ],
)
def test_placement_rules_refuse_what_cannot_be_placed(changes, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(_cfg(**changes))


def test_colocated_sleep_needs_sync_mode_and_a_vllm_level():
    cfg = _cfg(rollout_gpus=1, rank_gpus=1, placement="colocated")
    cfg.trainer.mode = "async"
    with pytest.raises(ConfigError, match="placement=colocated puts vLLM to sleep"):
        validate(cfg)
    cfg.rollout.sleep_level = 0  # both awake: async is possible
    validate(cfg)
    cpu = _cfg(placement="colocated")
    cpu.trainer.mode = "async"  # CPU workers never sleep
    validate(cpu)
    cfg.rollout.sleep_level = 3
    with pytest.raises(ConfigError, match="rollout.sleep_level must be 0, 1 or 2"):
        validate(cfg)


def test_only_colocated_gpu_workers_enable_vllm_sleep_mode():
    from orchestrator.actors import rollout_config

    colocated = _cfg(rollout_gpus=1, rank_gpus=1, placement="colocated")
    args = vllm_args("/m", rollout_config(colocated), "bfloat16", seed=0)
    assert args["enable_sleep_mode"] is True
    split = _cfg(rollout_gpus=1, rank_gpus=1)
    assert "enable_sleep_mode" not in vllm_args("/m", rollout_config(split), "bfloat16", seed=0)
    assert rollout_config(split).sleep_level == 0  # split never sleeps
    cpu = _cfg(placement="colocated")  # vLLM refuses the flag on CPU platforms
    assert "enable_sleep_mode" not in vllm_args("/m", rollout_config(cpu), "float32", seed=0)


def test_valid_placements_pass_the_rules():
    for cfg in (_cfg(placement="colocated"), _cfg(rollout_gpus=4, rank_gpus=1)):
        validate(cfg)
    validate(_cfg(rollout_gpus=1, rank_gpus=1, placement="colocated"))


def test_checkpoint_dir_moves_the_checkpoint_root(tmp_path):
    cfg = Config()
    cfg.logger.run_dir = str(tmp_path / "run")
    assert checkpoint_root(cfg) == tmp_path / "run" / "checkpoints"
    cfg.trainer.checkpoint_dir = str(tmp_path / "shared")
    assert checkpoint_root(cfg) == tmp_path / "shared"


def test_the_placement_table_shows_gpus_or_cores():
    rows = [
        ("learner", "rank-0", Placement("10.0.0.2", "abcdef0123", ("1",), (0, 1))),
        ("rollout", "rollout-0", Placement("10.0.0.1", "9876543210", (), (0,))),
    ]
    assert table(rows).splitlines() == [
        "role     actor      node                 devices",
        "learner  rank-0     10.0.0.2 / abcdef01  GPU 1",
        "rollout  rollout-0  10.0.0.1 / 98765432  cores 0",
    ]


def test_rank_zero_offers_its_node_address_and_a_free_port():
    import socket

    import ray

    address, port = rendezvous_address()
    assert address == ray.util.get_node_ip_address() and not address.startswith("127.")
    with socket.socket() as sock:
        sock.bind((address, port))  # free on this node's address


class _Call:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        async def run():
            return self.fn(*args)

        return run()


class _Rank:
    """A learner rank handle: `rendezvous` answers its own node's address."""

    def __init__(self, node: str, started: list):
        self.rendezvous = _Call(lambda: (node, 4242))
        self.start = _Call(lambda addr, port: started.append((node, addr, port)))


def test_every_rank_starts_at_rank_zeros_address(monkeypatch):
    import asyncio

    from orchestrator import actors
    from orchestrator.learners import LearnerGroup

    started: list = []
    ranks = [_Rank("10.0.0.7", started), _Rank("10.0.0.8", started)]
    monkeypatch.setattr(actors, "learner_ranks", lambda cfg, path: ranks)
    asyncio.run(LearnerGroup.start(Config(), "/m"))
    assert started == [("10.0.0.7", "10.0.0.7", 4242), ("10.0.0.8", "10.0.0.7", 4242)]


def test_workers_off_the_learner_node_are_named():
    assert off_learner_node(["a", "a"], ["a"]) == []
    assert off_learner_node(["a", "b", "c"], ["a", "b"]) == [1, 2]
    assert off_learner_node(["a"], []) == []
