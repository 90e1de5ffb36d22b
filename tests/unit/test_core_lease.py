"""learner.cores.CoreLease on this machine's real cores, threads and torch: an offer
for the running step widens every thread of the process and torch's thread count
at the next safe point (a block's forward or backward), the step's end gives the
cores back, and an offer for another step is never taken."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from learner.cores import CoreLease

ALLOWED = os.sched_getaffinity(0)
pytestmark = pytest.mark.skipif(len(ALLOWED) < 2, reason="borrowing needs two cores")


@pytest.fixture
def lease():
    own, spare = (min(ALLOWED),), (max(ALLOWED),)
    threads_before = torch.get_num_threads()
    lease = CoreLease(own, spare, max_threads=2, allowed=ALLOWED)
    # a thread made before the pin, as Ray's and OpenMP's are
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    from learner.setup import pin_cores

    assert pin_cores(own, threads=2) == 1
    torch.set_num_threads(1)
    yield lease, other.native_id
    stop.set()
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), ALLOWED)
        except OSError:
            pass
    torch.set_num_threads(threads_before)


def _mask(tid: int) -> set[int]:
    return os.sched_getaffinity(tid)


def test_pinning_binds_every_thread_not_only_the_caller(lease):
    lease, other = lease
    assert _mask(other) == set(lease.own)
    assert _mask(0) == set(lease.own)


def test_an_offer_for_the_step_widens_every_thread_until_the_step_ends(lease):
    lease, other = lease
    lease.begin(7)
    lease.take_if_offered()
    assert (_mask(other), torch.get_num_threads()) == (set(lease.own), 1)  # not offered
    lease.offer(7)
    lease.take_if_offered()
    assert _mask(other) == _mask(0) == {*lease.own, *lease.spare}
    assert torch.get_num_threads() == 2
    assert lease.give_back() > 0.0
    assert _mask(other) == _mask(0) == set(lease.own)
    assert torch.get_num_threads() == 1


def test_a_late_offer_is_not_taken_by_the_next_step(lease):
    lease, other = lease
    lease.begin(3)
    assert lease.give_back() == 0.0
    lease.offer(3)  # arrives after step 3 ended
    lease.begin(4)
    lease.take_if_offered()
    assert _mask(other) == set(lease.own)
    assert lease.give_back() == 0.0
    lease.offer(5)  # made before step 5 began: it is that step's
    lease.begin(5)
    lease.take_if_offered()
    assert _mask(other) == {*lease.own, *lease.spare}
    assert lease.give_back() > 0.0


def test_blocks_take_an_offer_in_their_forward_and_in_their_backward(lease):
    lease, _ = lease
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(3)])
    )
    assert lease.install(model) == 3
    first, blocks = model[0], model[1]

    def forward(x: torch.Tensor) -> torch.Tensor:
        hidden = first(x)
        for block in blocks:
            hidden = block(hidden)
        return hidden.sum()

    lease.begin(1)
    lease.offer(1)
    forward(torch.randn(2, 4))
    assert torch.get_num_threads() == 2  # taken at the first block's forward
    lease.give_back()

    lease.begin(2)
    loss = forward(torch.randn(2, 4))
    assert torch.get_num_threads() == 1
    widths: list[int] = []
    # offered once backward has begun (the loss's grad), taken at a block's backward
    loss.register_hook(lambda grad: lease.offer(2))
    first.weight.register_hook(lambda grad: widths.append(torch.get_num_threads()))
    loss.backward()
    assert widths == [2]
    assert lease.give_back() > 0.0
    assert torch.get_num_threads() == 1
