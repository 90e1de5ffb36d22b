"""Router: least outstanding tokens, affinity, ties, drain, dead workers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollout.router import NoWorkerAvailable, Router, WorkersDraining, placement_skew


def test_least_outstanding_tokens_not_requests():
    router = Router(["a", "b"])
    big = router.place("s1", 1000).worker_id  # one big request
    other = router.place("s2", 10).worker_id
    assert other != big
    assert router.place("s3", 10).worker_id == other  # 2 requests there, but fewer tokens


def test_session_affinity_and_release():
    router = Router(["a", "b"])
    first = router.place("s", 50).worker_id
    router.done(first, 50)
    router.place("other", 500)
    assert router.place("s", 50).worker_id == first


def test_ties_rotate():
    router = Router(["a", "b", "c"])
    chosen = []
    for i in range(3):
        p = router.place(f"s{i}", 10)
        router.done(p.worker_id, 10)
        chosen.append(p.worker_id)
    assert sorted(chosen) == ["a", "b", "c"]


def test_dead_worker_sessions_move_and_report_it():
    router = Router(["a", "b"])
    first = router.place("s", 10).worker_id
    router.done(first, 10)
    router.mark_dead(first)
    moved = router.place("s", 10)
    assert moved.worker_id != first and moved.moved


def test_draining_worker_admits_no_new_sessions_but_keeps_its_own():
    router = Router(["a", "b"])
    kept = router.place("s", 10).worker_id
    router.set_draining(kept, True)
    assert router.place("new", 1).worker_id != kept
    assert router.place("s", 10).worker_id == kept


def test_no_worker():
    router = Router(["a"])
    router.mark_dead("a")
    with pytest.raises(NoWorkerAvailable):
        router.place("s", 1)


def test_all_draining_is_a_wait_not_a_loss():
    router = Router(["a", "b"])
    router.set_draining("a", True)
    router.set_draining("b", True)
    with pytest.raises(WorkersDraining):
        router.place("s", 1)
    router.set_draining("b", False)
    assert router.place("s", 1).worker_id == "b"


def test_sessions_on_a_worker_are_what_a_drain_waits_for():
    router = Router(["a", "b"])
    placed = {s: router.place(s, 10).worker_id for s in ("s1", "s2", "s3")}
    on_a = sorted(s for s, w in placed.items() if w == "a")
    assert sorted(router.sessions_on("a")) == on_a
    for session in on_a:
        router.end_session(session)
    assert router.sessions_on("a") == []


def test_stats_report_load_queue_and_state():
    router = Router(["a", "b"])
    worker = router.place("s", 100).worker_id
    router.set_draining(worker, True)
    stats = router.stats()[worker]
    assert stats.outstanding_tokens == 100 and stats.queue_depth == 1
    assert stats.sessions == 1 and stats.draining and stats.healthy


heavy_tailed = st.one_of(st.integers(1, 50), st.integers(500, 5000))


@given(costs=st.lists(heavy_tailed, min_size=1, max_size=200), workers=st.integers(2, 5))
def test_greedy_placement_keeps_loads_within_one_request(costs, workers):
    """Under skewed request sizes, outstanding work never differs between two
    workers by more than the largest single request (greedy list scheduling)."""
    router = Router([f"w{i}" for i in range(workers)])
    for index, cost in enumerate(costs):
        open_loads = {w: load.outstanding_tokens for w, load in router.loads.items()}
        chosen = router.place(f"s{index}", cost).worker_id
        assert open_loads[chosen] == min(open_loads.values())
        loads = [load.outstanding_tokens for load in router.loads.values()]
        assert max(loads) - min(loads) <= max(costs[: index + 1])


@given(costs=st.lists(heavy_tailed, min_size=20, max_size=200))
def test_completed_work_frees_capacity(costs):
    router = Router(["a", "b"])
    for index, cost in enumerate(costs):
        worker = router.place(f"s{index}", cost).worker_id
        router.done(worker, cost)
        router.end_session(f"s{index}")
    assert all(load.outstanding_tokens == 0 for load in router.loads.values())
    assert sum(load.placed_tokens for load in router.loads.values()) == sum(costs)


def test_placement_skew():
    assert placement_skew([10.0, 10.0]) == 1.0
    assert placement_skew([30.0, 10.0]) == 1.5
    assert placement_skew([]) == 1.0
