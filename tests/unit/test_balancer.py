"""The balancer's AIMD: a starved learner grows the in-flight limit, rollouts that
run ahead (groups gone stale in line, an overfull buffer) shrink it, the slow tail
(groups that arrive at or past the staleness bound) only stops the growth, always
within bounds."""

from __future__ import annotations

import itertools

from core.config import BalancerConfig
from orchestrator.balancer import Balancer, Observation

GROUPS_PER_BATCH = 4


def _balancer(**changes) -> Balancer:
    balancer = Balancer(BalancerConfig(**changes), GROUPS_PER_BATCH, gate_width=40)
    balancer.limit = 10.0
    return balancer


def _fast_learner() -> Observation:
    return Observation(
        learner_wait_s=2.0, buffered_groups=0, expired_total=0, late_total=0, queue_depth=4
    )


_STALE_SO_FAR = itertools.count(3, 3)  # every slow step drops three more groups


def _slow_learner() -> Observation:
    return Observation(
        learner_wait_s=0.0,
        buffered_groups=40,
        expired_total=next(_STALE_SO_FAR),
        late_total=0,
        queue_depth=4,
    )


def test_a_starved_learner_grows_the_limit_additively_up_to_the_gate():
    balancer = _balancer(max_in_flight=64)
    assert balancer.update(_fast_learner()) == "increase" and balancer.in_flight_limit == 11
    for _ in range(100):
        balancer.update(_fast_learner())
    assert balancer.in_flight_limit == 40  # the staleness gate's width bounds it


def test_rollouts_running_ahead_shrink_it_multiplicatively_to_one_batch():
    balancer = _balancer()
    assert balancer.update(_slow_learner()) == "decrease" and balancer.in_flight_limit == 5
    for _ in range(10):
        balancer.update(_slow_learner())
    assert balancer.in_flight_limit == GROUPS_PER_BATCH


def test_saturated_engines_and_a_fed_learner_hold():
    balancer = _balancer()
    saturated = Observation(
        learner_wait_s=2.0, buffered_groups=0, expired_total=0, late_total=0, queue_depth=999
    )
    assert balancer.update(saturated) == "hold"
    fed = Observation(
        learner_wait_s=0.0, buffered_groups=4, expired_total=0, late_total=0, queue_depth=4
    )
    assert balancer.update(fed) == "hold" and balancer.in_flight_limit == 10


def test_late_groups_stop_the_growth_without_shrinking_the_window():
    balancer = _balancer()
    late = [
        Observation(
            learner_wait_s=2.0, buffered_groups=0, expired_total=0, late_total=n, queue_depth=4
        )
        for n in (2, 2, 5)
    ]
    assert balancer.update(late[0]) == "hold" and balancer.in_flight_limit == 10
    assert balancer.update(late[1]) == "increase"  # no new late group: starved, so grow
    assert balancer.update(late[2]) == "hold" and balancer.in_flight_limit == 11
    expired = Observation(
        learner_wait_s=2.0, buffered_groups=0, expired_total=1, late_total=5, queue_depth=4
    )
    assert balancer.update(expired) == "decrease"  # went stale in line: rollouts ran ahead


def test_alternating_pressure_stays_bounded():
    balancer = _balancer()
    for step in range(200):
        balancer.update(_fast_learner() if step % 3 else _slow_learner())
        assert GROUPS_PER_BATCH <= balancer.in_flight_limit <= 40
    assert balancer.stats()["balancer/in_flight_limit"] == balancer.in_flight_limit
