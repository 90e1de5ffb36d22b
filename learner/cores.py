"""The cores a learner rank computes on: its own (placement's pin) and, while the
rollout engines bound to its node's other cores idle, theirs too
(learner.borrow_idle_cores).

Why: in async mode on CPU the engines and the learner are pinned apart so the two
overlap without contending. When the learner step is the longer of the two, the
engines finish the next batch early in the step and their cores then sit idle
while the learner runs on its own: async lost to sync, whose learner has every
core. Borrowing gives the idle cores to the learner for the rest of that step.

The driver sees the engines idle and offers their cores for one step (`offer`,
called on Ray's control thread while the step runs). The training thread takes
them at its next safe point (`take_if_offered`: each decoder layer's forward and
backward, each micro-batch, the optimizer step) and gives them back when the step
ends (`give_back`). An offer names its step, so one that arrives late is never
taken by the next step. Affinity is set on every thread of the process: torch's
OpenMP workers take their creator's mask only when created, and Ray runs actor
methods on threads of its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import torch


def bind_threads(cores: Iterable[int], allowed: set[int]) -> set[int]:
    """Bind every thread of this process to those of `cores` in `allowed` (the cores
    the process may run on, taken before any pin); returns the set applied, empty
    (nothing changed) when none is usable."""
    usable = set(cores) & allowed
    if not usable:
        return set()
    for tid in _threads():
        try:
            os.sched_setaffinity(tid, usable)
        except OSError:  # the thread ended meanwhile
            continue
    return usable


def thread_cores() -> set[int]:
    """The cores any thread of this process may run on now (the union of their masks)."""
    cores: set[int] = set()
    for tid in _threads():
        try:
            cores |= os.sched_getaffinity(tid)
        except OSError:  # the thread ended meanwhile
            continue
    return cores


def _threads() -> list[int]:
    return [int(tid) for tid in os.listdir("/proc/self/task")]


class CoreLease:
    """A rank's own cores and those it may borrow for a step (see the module doc)."""

    def __init__(
        self, own: tuple[int, ...], spare: tuple[int, ...], max_threads: int, allowed: set[int]
    ):
        self.own = own
        self.allowed = allowed
        self.spare = tuple(c for c in spare if c not in own)
        self.max_threads = max(1, max_threads)
        self._step: int | None = None
        self._offered: int | None = None
        self._wide_since: float | None = None

    @property
    def narrow_threads(self) -> int:
        return min(self.max_threads, len(self.own))

    def begin(self, step: int) -> None:
        """A step starts (it takes an offer made for `step`, before or during it)."""
        self._step = step

    def offer(self, step: int) -> None:
        """The engines are idle until step `step` ends: its rank may borrow their cores."""
        self._offered = step

    def take_if_offered(self) -> None:
        """On the training thread: widen to the borrowed cores if this step has them."""
        if self._wide_since is not None or self._step is None or self._offered != self._step:
            return
        cores = bind_threads((*self.own, *self.spare), self.allowed)
        if cores:
            torch.set_num_threads(min(self.max_threads, len(cores)))
            self._wide_since = time.perf_counter()

    def give_back(self) -> float:
        """On the training thread, when the step ends: back to the rank's own cores;
        returns how long it ran on borrowed ones."""
        self._step = None
        if self._wide_since is None:
            return 0.0
        borrowed = time.perf_counter() - self._wide_since
        self._wide_since = None
        bind_threads(self.own, self.allowed)
        torch.set_num_threads(self.narrow_threads)
        return borrowed

    def install(self, model: torch.nn.Module) -> int:
        """Make every block of `model`'s layer lists a safe point, in its forward and
        in its backward; returns how many blocks."""
        blocks = [b for m in model.modules() if isinstance(m, torch.nn.ModuleList) for b in m]
        for block in blocks:
            block.register_forward_pre_hook(self._at_block)
        return len(blocks)

    def _at_block(self, _module: torch.nn.Module, args: tuple) -> None:
        self.take_if_offered()
        hidden = args[0] if args else None
        if isinstance(hidden, torch.Tensor) and hidden.requires_grad:
            hidden.register_hook(self._in_backward)

    def _in_backward(self, _grad: torch.Tensor) -> None:
        self.take_if_offered()
