"""Task samplers and the curriculum (orchestrator.curriculum): which task starts next."""

from __future__ import annotations

import pickle
from collections import Counter

import pytest

from core.config import Config, ConfigError, CurriculumConfig
from core.types import Group, Status, Trajectory
from orchestrator.checkpoint import ControllerState
from orchestrator.curriculum import (
    CurriculumExhausted,
    SequentialSeeds,
    TaskSet,
    task_counts,
    task_sampler,
)

N = 10
GROUP = 4


def _group(seed: int, solved: int, size: int = GROUP, failed: int = 0) -> Group:
    trajectories = []
    for i in range(size):
        t = Trajectory(f"g{seed}/{i}", f"g{seed}", "env", seed, prompt_length=1)
        t.append([1], generated=False)
        t.append([2], generated=True, logprobs=[-0.1], versions=[0])
        t.reward = 1.0 if i < solved else 0.0
        t.status = Status.FAILED if i >= size - failed else Status.COMPLETED
        trajectories.append(t)
    return Group(f"g{seed}", "env", seed, trajectories)


def _tasks(**changes) -> TaskSet:
    cfg = CurriculumConfig(**changes)
    return TaskSet(N, cfg, GROUP, seed=0)


def test_a_plain_task_set_gives_every_task_once_per_epoch_under_fresh_seeds():
    tasks = _tasks()
    seeds = [tasks.next_seed() for _ in range(3 * N)]
    for epoch in range(3):
        rows = [s % N for s in seeds[epoch * N : (epoch + 1) * N]]
        assert sorted(rows) == list(range(N))
        assert all(s // N == epoch for s in seeds[epoch * N : (epoch + 1) * N])
    assert len(set(seeds)) == len(seeds)
    first, second = [s % N for s in seeds[:N]], [s % N for s in seeds[N : 2 * N]]
    assert first != second  # each epoch is shuffled anew
    assert first != list(range(N))


def test_without_the_curriculum_nothing_is_retired():
    tasks = _tasks(enabled=False)
    for row in range(N):
        tasks.record(_group(row, solved=GROUP))
    assert tasks.retired == {}
    assert sorted(tasks.next_seed() % N for _ in range(N)) == list(range(N))


def test_tasks_always_or_never_solved_are_retired_and_never_rolled_out_again():
    tasks = _tasks(enabled=True, retry_unsolvable_epochs=0)
    tasks.record(_group(3, solved=GROUP))  # always solved
    tasks.record(_group(N + 5, solved=0))  # never solved (its second issue: seed N + 5)
    tasks.record(_group(7, solved=2))  # mid: stays
    assert tasks.retired == {3: "solved", 5: "unsolvable"}
    draws = 5 * (N - 2)
    rows = [tasks.next_seed() % N for _ in range(draws)]
    assert 3 not in rows and 5 not in rows
    assert Counter(rows) == {row: 5 for row in range(N) if row not in (3, 5)}
    walked = [int(r) for epoch in range(6) for r in tasks._order(epoch)]
    walked_to_last = walked[: walked.index(rows[-1], 4 * N) + 1]
    passed_over = sum(walked_to_last.count(row) for row in (3, 5))
    assert passed_over >= 8
    stats = tasks.stats()
    assert stats["curriculum/rollouts_saved"] == passed_over * GROUP
    assert stats["curriculum/active"] == N - 2
    assert (stats["curriculum/retired_solved"], stats["curriculum/retired_unsolvable"]) == (1, 1)


def test_bounds_and_min_groups_decide_retirement():
    tasks = _tasks(enabled=True, min_groups=2, retire_solved_at=0.75, retire_unsolved_at=0.25)
    tasks.record(_group(1, solved=GROUP))
    assert tasks.retired == {}  # one group is not enough
    tasks.record(_group(1, solved=2))  # 6 of 8 = 0.75
    tasks.record(_group(2, solved=1))
    tasks.record(_group(2, solved=1))  # 2 of 8 = 0.25
    tasks.record(_group(4, solved=2))
    tasks.record(_group(4, solved=2))
    assert tasks.retired == {1: "solved", 2: "unsolvable"}


def test_failed_members_do_not_count_toward_a_pass_rate():
    tasks = _tasks(enabled=True)
    tasks.record(_group(6, solved=2, failed=2))  # 2 of the 2 completed solved
    assert tasks.retired == {6: "solved"}
    tasks.record(_group(8, solved=0, failed=GROUP))  # nothing completed: no evidence
    assert 8 not in tasks.retired and tasks.groups[8] == 0


def test_mid_weighting_draws_mid_difficulty_tasks_more_often():
    tasks = _tasks(enabled=True, weighting="mid")
    for _ in range(5):
        tasks.record(_group(0, solved=4, size=8))  # p ~ 0.5
        tasks.record(_group(1, solved=7, size=8))  # p ~ 0.85
    rows = Counter(tasks.next_seed() % N for _ in range(4000))
    assert rows[0] > 1.5 * rows[1]
    assert set(rows) == set(range(N))


def test_a_task_set_with_every_task_retired_stops_in_one_line():
    tasks = _tasks(enabled=True, retry_unsolvable_epochs=0)
    for row in range(N):
        tasks.record(_group(row, solved=GROUP if row % 2 else 0))
    with pytest.raises(CurriculumExhausted, match="every one of the 10 tasks is retired"):
        tasks.next_seed()


def test_unsolvable_tasks_come_back_after_the_configured_epochs_with_fresh_counts():
    tasks = _tasks(enabled=True, retry_unsolvable_epochs=2)
    tasks.record(_group(4, solved=0))
    tasks.record(_group(6, solved=GROUP))
    assert tasks.retired == {4: "unsolvable", 6: "solved"}
    epochs = [[tasks.next_seed() % N for _ in range(N - 2)] for _ in range(2)]
    assert all(4 not in rows and 6 not in rows for rows in epochs)  # epochs 0 and 1
    rows = [tasks.next_seed() % N for _ in range(N - 1)]  # epoch 2: 4 is back, 6 is not
    assert sorted(rows) == [r for r in range(N) if r != 6]
    assert tasks.retired == {6: "solved"} and tasks.stats()["curriculum/retried"] == 1
    assert tasks.groups[4] == tasks.samples[4] == 0  # judged afresh


def test_when_every_task_is_retired_the_unsolvable_ones_are_retried_at_once():
    tasks = _tasks(enabled=True, retry_unsolvable_epochs=5)
    for row in range(N):
        tasks.record(_group(row, solved=GROUP if row < 3 else 0))
    rows = {tasks.next_seed() % N for _ in range(N - 3)}
    assert rows == set(range(3, N))
    assert tasks.stats()["curriculum/retried"] == N - 3


@pytest.mark.parametrize("weighting", ["none", "mid"])
def test_the_state_round_trips_through_a_checkpoint_to_the_same_order(weighting):
    tasks = _tasks(enabled=True, weighting=weighting)
    for _ in range(N + 3):
        seed = tasks.next_seed()
        tasks.record(_group(seed, solved=seed % (GROUP + 1)))
    saved = ControllerState(next_step=4, version=4, next_seed=0, tasks=tasks.state())
    resumed_state = pickle.loads(pickle.dumps(saved))
    cfg = Config()
    cfg.curriculum = CurriculumConfig(enabled=True, weighting=weighting)
    cfg.env.group_size = GROUP
    resumed = task_sampler(cfg, N, resumed_state)
    assert resumed.state() == tasks.state()
    expected = [tasks.next_seed() for _ in range(3 * N)]
    assert [resumed.next_seed() for _ in range(3 * N)] == expected
    fresh = task_sampler(cfg, N, None)
    assert [fresh.next_seed() for _ in range(3 * N)] != expected  # the state mattered


def test_a_checkpoint_of_another_task_set_is_refused():
    cfg = Config()
    state = ControllerState(next_step=1, version=1, next_seed=0, tasks=_tasks().state())
    with pytest.raises(ValueError, match="has 10 tasks, the env 11"):
        task_sampler(cfg, N + 1, state)


def test_procedural_envs_get_sequential_seeds_from_the_trainer_seed_or_the_checkpoint():
    cfg = Config()
    cfg.trainer.seed = 3
    sampler = task_sampler(cfg, None)
    assert isinstance(sampler, SequentialSeeds)
    assert [sampler.next_seed() for _ in range(3)] == [3_000_000, 3_000_001, 3_000_002]
    resumed = task_sampler(cfg, None, ControllerState(1, 1, next_seed=3_000_003))
    assert resumed.next_seed() == 3_000_003


def test_a_curriculum_on_an_env_without_a_task_set_is_refused_in_one_line():
    cfg = Config()
    cfg.curriculum.enabled = True
    with pytest.raises(ConfigError, match="curriculum.enabled needs an env with a finite task"):
        task_counts(cfg)
    cfg.curriculum.enabled = False
    assert task_counts(cfg).train is None
