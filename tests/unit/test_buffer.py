"""ReplayBuffer: groups, the staleness gate at admission and serving, capacity."""

from __future__ import annotations

from core.types import Group, Trajectory
from orchestrator.buffer import ReplayBuffer


def _group(gid: str, versions: list[int], reward: float = 1.0) -> Group:
    trajs = []
    for i, version in enumerate(versions):
        t = Trajectory(f"{gid}/{i}", gid, "env", 0, prompt_length=2)
        t.append([1, 2], generated=False)
        t.append([3, 4], generated=True, logprobs=[-0.1, -0.2], versions=[version, version])
        t.reward = reward
        trajs.append(t)
    return Group(gid, "env", 0, trajs)


class Clock:
    def __init__(self):
        self.version = 0

    def __call__(self):
        return self.version


def test_serves_complete_groups_oldest_first():
    buf = ReplayBuffer(max_staleness=1, capacity_groups=10, version=Clock())
    for name in "abc":
        buf.add(_group(name, [0, 0]))
    assert buf.take(4) is None
    assert [g.group_id for g in buf.take(2)] == ["a", "b"]
    assert len(buf) == 1


def test_staleness_gate_at_admission():
    clock = Clock()
    buf = ReplayBuffer(max_staleness=1, capacity_groups=10, version=clock)
    clock.version = 3
    assert not buf.add(_group("old", [1, 2]))  # oldest token is 2 versions behind
    assert buf.add(_group("ok", [2, 3]))
    assert buf.counts.dropped_stale == 1


def test_staleness_gate_at_serving():
    clock = Clock()
    buf = ReplayBuffer(max_staleness=1, capacity_groups=10, version=clock)
    buf.add(_group("a", [0, 0]))
    buf.add(_group("b", [1, 1]))
    clock.version = 2  # 'a' is now 2 behind
    served = buf.take(1)
    assert [g.group_id for g in served] == ["b"]
    assert buf.counts.dropped_stale == 1
    assert buf.stats()["buffer/served_staleness_1"] == 1


def test_a_group_at_the_staleness_bound_is_served_before_fresher_ones():
    clock = Clock()
    buf = ReplayBuffer(max_staleness=2, capacity_groups=10, version=clock)
    clock.version = 2
    for name in "ab":
        buf.add(_group(name, [2, 2]))
    buf.add(_group("straggler", [0, 1]))  # arrives last, 2 behind: the next version drops it
    assert [g.group_id for g in buf.take(2)] == ["straggler", "a"]
    clock.version = 3
    assert [g.group_id for g in buf.take(1)] == ["b"]
    assert buf.counts.dropped_stale == 0


def test_stale_drops_say_which_arrived_at_or_past_the_bound():
    clock = Clock()
    buf = ReplayBuffer(max_staleness=1, capacity_groups=10, version=clock)
    clock.version = 2
    buf.add(_group("late", [0, 2]))  # past the bound on arrival
    buf.add(_group("at_bound", [1, 2]))  # trainable only at version 2
    buf.add(_group("waited", [2, 2]))  # fresh on arrival
    clock.version = 4  # no batch taken at 2 or 3: both left in line expire
    assert buf.take(1) is None
    assert buf.counts.dropped_stale == 3
    assert buf.counts.arrived_stale == 2  # 'late' and 'at_bound', not 'waited'
    assert buf.stats()["buffer/arrived_stale"] == 2


def test_capacity_evicts_oldest():
    buf = ReplayBuffer(max_staleness=5, capacity_groups=2, version=Clock())
    for name in "abc":
        buf.add(_group(name, [0]))
    assert buf.counts.evicted == 1
    assert [g.group_id for g in buf.take(2)] == ["b", "c"]


def test_state_survives_a_checkpoint_round_trip(tmp_path):
    from orchestrator.checkpoint import (
        ControllerState,
        latest,
        mark_latest,
        read_controller_state,
        step_dir,
        write_controller_state,
    )

    clock = Clock()
    buf = ReplayBuffer(max_staleness=1, capacity_groups=10, version=clock)
    for name in "abc":
        buf.add(_group(name, [0, 0]))
    buf.take(1)
    assert latest(tmp_path) is None
    directory = step_dir(tmp_path, 7)
    write_controller_state(directory, ControllerState(7, 3, 1234, [1230, 1232], buf.state()))
    mark_latest(tmp_path, directory)

    saved = read_controller_state(latest(tmp_path))
    restored = ReplayBuffer(max_staleness=1, capacity_groups=10, version=clock)
    restored.restore(saved.buffer)
    assert (saved.next_step, saved.version, saved.next_seed) == (7, 3, 1234)
    assert saved.pending_seeds == [1230, 1232]
    assert restored.stats() == buf.stats()
    assert [g.group_id for g in restored.take(2)] == ["b", "c"]


def test_resume_without_a_checkpoint_says_what_to_pass(tmp_path):
    import pytest

    from core.config import Config, ConfigError
    from orchestrator.run import resume_point

    cfg = Config()
    cfg.logger.run_dir = str(tmp_path)
    assert resume_point(cfg) is None
    cfg.trainer.resume = True
    with pytest.raises(ConfigError, match="hydra.run.dir"):
        resume_point(cfg)


def test_replay_ratio_serves_a_group_up_to_k_times_within_staleness():
    clock = Clock()
    left = []
    buf = ReplayBuffer(
        max_staleness=1,
        capacity_groups=10,
        version=clock,
        replay_ratio=2,
        on_leave=lambda g, reason: left.append((g.group_id, reason)),
    )
    buf.add(_group("a", [0, 0]))
    assert [g.group_id for g in buf.take(1)] == ["a"]
    assert [g.group_id for g in buf.take(1)] == ["a"]  # second and last time
    assert buf.take(1) is None
    buf.add(_group("b", [0, 0]))
    buf.take(1)
    clock.version = 2  # 'b' served once, now too stale for its replay
    assert buf.take(1) is None
    assert left == [("b", "retired")] and buf.counts.retired == 1
    assert buf.counts.dropped_stale == 0


def test_dynamic_sampling_filters_zero_variance_groups():
    left = []
    buf = ReplayBuffer(
        max_staleness=1,
        capacity_groups=10,
        version=Clock(),
        drop_zero_variance=True,
        on_leave=lambda g, reason: left.append((g.group_id, reason)),
    )
    assert not buf.add(_group("same", [0, 0], reward=1.0))
    mixed = _group("mixed", [0, 0])
    mixed.trajectories[0].reward = 0.0
    assert buf.add(mixed)
    assert left == [("same", "filtered")] and buf.stats()["buffer/filtered"] == 1
