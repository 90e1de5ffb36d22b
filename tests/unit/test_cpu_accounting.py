"""orchestrator.resources.tree_cpu_s: CPU seconds per role of the run's process tree.
A child process titled as a Ray actor is counted for that role, and so is what it
spawns (vLLM's engine processes under a rollout worker); the caller is the driver."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from orchestrator.resources import tree_cpu_s
from orchestrator.summaries import StepClock

BUSY_S = 0.6
SPAWN_BUSY_CHILD = f"""
import subprocess, time
child = subprocess.Popen([{sys.executable!r}, "-c",
    "import time\\nend = time.process_time() + {BUSY_S}\\nwhile time.process_time() < end: pass\\n"
    "time.sleep(30)"])
time.sleep(30)
"""


def _titled(title: str) -> subprocess.Popen:
    """A process whose title is `title` (argv[0], as Ray's setproctitle shows it) that
    spawns a child burning BUSY_S of CPU (the title hides the interpreter's path from
    the child's sys.executable, so the path is written into the code)."""
    return subprocess.Popen([title, "-c", SPAWN_BUSY_CHILD], executable=sys.executable)


def _after_busy(before: dict[str, float], role: str) -> dict[str, float]:
    deadline = time.monotonic() + 20
    while True:
        spent = {r: s - before[r] for r, s in tree_cpu_s().items()}
        if spent[role] >= BUSY_S * 0.9 or time.monotonic() > deadline:
            return spent
        time.sleep(0.1)


def test_an_actors_descendants_count_for_its_role():
    before = tree_cpu_s()
    process = _titled("ray::RolloutWorker.generate")
    try:
        spent = _after_busy(before, "rollout")
    finally:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
    assert spent["rollout"] >= BUSY_S * 0.9
    # (other roles may tick: the session's Ray actors are this process's children too)
    assert spent["learner"] < BUSY_S / 2 and spent["env"] < BUSY_S / 2


def test_an_untitled_child_is_rays_and_the_step_clock_reports_each_role():
    clock = StepClock()
    process = _titled("raylet")
    try:
        _after_busy(tree_cpu_s(), "ray")
        metrics = clock.tick(generated_tokens=0)
    finally:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
    assert metrics["perf/cpu_s/ray"] >= BUSY_S * 0.9
    assert metrics["perf/cpu_s/rollout"] < BUSY_S / 2
    assert 0.0 < metrics["perf/cpu_busy"] <= 1.0


def test_the_step_clock_reads_memory_at_most_every_memory_every_s(monkeypatch):
    from orchestrator import summaries

    readings = []
    monkeypatch.setattr(summaries, "tree_memory_gib", lambda: readings.append(1) or 1.5)
    clock = StepClock()
    first = clock.tick(generated_tokens=0)
    second = clock.tick(generated_tokens=0)
    assert len(readings) == 1 and first["perf/memory_gib"] == second["perf/memory_gib"] == 1.5
    clock.memory_at -= summaries.MEMORY_EVERY_S  # as if that long had passed
    clock.tick(generated_tokens=0)
    assert len(readings) == 2
