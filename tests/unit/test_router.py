"""Router: least outstanding tokens, affinity, ties, drain, dead workers."""

from __future__ import annotations

import pytest

from rollout.router import NoWorkerAvailable, Router


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
