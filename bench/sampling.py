"""A background thread that calls a measurement function every few seconds until
stopped: what the memory-sampling benchmarks share. Owns nothing else."""

from __future__ import annotations

import threading
from collections.abc import Callable


class PeriodicSampler:
    """Calls `sample()` every `interval_s` seconds in a daemon thread until `stop()`."""

    def __init__(self, sample: Callable[[], None], interval_s: float):
        self._sample = sample
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self._sample()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
