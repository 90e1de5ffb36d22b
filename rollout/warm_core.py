"""WarmCore: vLLM's engine-core process, started before vLLM asks for it.

AsyncLLM always runs its engine core in a process of its own, spawned from
`CoreEngineProcManager` with `get_mp_context().Process(target=
EngineCoreProc.run_engine_core, name=..., kwargs=...)` and `proc.start()`
(vllm/v1/engine/utils.py:256-329); inside a Ray actor vLLM spawns (vllm/utils/
system_utils.py:122-161). A spawned interpreter imports vLLM again, and only once
the actor has imported it and built the engine's config: two ~6 s imports one
after the other on the start-up's critical path, the second on one core while
the other idles.

A WarmCore is that process spawned first: it imports vLLM's engine core while the
actor imports vLLM's client, then waits for what vLLM would have spawned it with.
`handing_off` stands in for vLLM's multiprocessing context while AsyncLLM starts:
the `Process` vLLM makes is this one, and its `start()` sends the target, the
actor's environment at that moment and the starting thread's cores to it. From
then on it is vLLM's engine-core process, a child of the actor like the one vLLM
spawns (pid, sentinel, exit code, terminate, join: the real process's).

What a process reads only when it starts cannot be handed over later: the
dynamic loader's LD_PRELOAD (vLLM's CPU platform adds torch's libgomp and its own
tcmalloc there for the engine-core process: vllm/platforms/cpu.py:442-510) and
the OpenMP and allocator variables. `born_with` sets LD_PRELOAD as vLLM will
before the WarmCore is spawned; if vLLM's environment at the handover differs in
any variable read at start, the WarmCore is stopped and vLLM spawns its own
(a log line says which variable): slower, never different.

Nothing here knows about Ray, rollouts or weights.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

PRELOAD = (
    "vllm.v1.engine.core",
    "vllm.v1.executor.uniproc_executor",
    "vllm.v1.worker.cpu_worker",
)
"""What the engine-core process imports before it runs (the bulk of its start-up)."""

READ_AT_START = ("LD_PRELOAD", "LD_LIBRARY_PATH", "OMP_", "GOMP_", "KMP_", "MALLOC_", "TCMALLOC_")
"""Environment variables (names, or prefixes ending in _) a process reads when it
starts or loads a library, before any handed-over environment could apply."""

VLLM_CONTEXT = "vllm.v1.engine.utils"
"""The module whose `get_mp_context` AsyncLLM's process manager calls."""


def cpu_preload(preload: str, torch_dir: Path, vllm_dir: Path) -> str:
    """LD_PRELOAD as vLLM's CPU platform leaves it for its engine-core process, from
    `preload` (the current value): torch's libgomp appended unless an OpenMP runtime
    is preloaded already (vllm/platforms/cpu.py:442-485), then vLLM's tcmalloc put
    first unless one is (cpu.py:487-510)."""
    if not any(omp in preload for omp in ("libomp", "libgomp", "libiomp")):
        libs = (torch_dir.parent / "torch.libs", torch_dir / "lib")
        found = [p for d in libs for p in sorted(d.glob("libgomp*.so*"))]
        if found:
            preload = f"{preload}:{found[0]}" if preload else str(found[0])
    if "libtcmalloc" not in preload:
        libs_dir = vllm_dir / "libs"
        for pattern in ("libtcmalloc_minimal*.so*", "libtcmalloc.so*"):
            if found := sorted(libs_dir.glob(pattern)):
                preload = f"{found[0]}:{preload}" if preload else str(found[0])
                break
    return preload


def born_with() -> None:
    """Put in this process's environment what vLLM's CPU platform will put there
    before it spawns the engine core (LD_PRELOAD), so a WarmCore spawned now starts
    as that process would."""
    import importlib.util

    torch_spec = importlib.util.find_spec("torch")
    vllm_spec = importlib.util.find_spec("vllm")
    if not (torch_spec and torch_spec.origin and vllm_spec and vllm_spec.origin):
        return
    preload = cpu_preload(
        os.environ.get("LD_PRELOAD", ""),
        Path(torch_spec.origin).parent,
        Path(vllm_spec.origin).parent,
    )
    if preload:
        os.environ["LD_PRELOAD"] = preload


def start_differences(born: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """The variables read at a process's start whose value differs between `born`
    (the WarmCore's environment) and `now` (what vLLM would spawn with). The
    library search path counts by the directories it names that exist: importing
    cv2 in the worker prepends its bundled `lib64` (cv2/__init__.py:146-147, "for
    sub-processes only"), which this install does not have, and an empty entry."""
    names = {n for n in (*born, *now) if n.startswith(READ_AT_START)}
    return sorted(n for n in names if _effective(n, born.get(n)) != _effective(n, now.get(n)))


def _effective(name: str, value: str | None) -> Any:
    if name != "LD_LIBRARY_PATH":
        return value
    return [d for d in (value or "").split(":") if d and os.path.isdir(d)]


@contextmanager
def born_on(cores: set[int] | None) -> Iterator[None]:
    """While inside, the calling thread runs on `cores` (if given), so that a process
    it starts is born there (a Linux child inherits the affinity of the thread that
    forks it); the thread's own cores are given back on the way out."""
    if not cores:
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


class WarmCore:
    """A spawned process that has imported vLLM's engine core and waits for its
    target (`handing_off`)."""

    def __init__(self, cores: set[int] | None = None, preload: tuple[str, ...] = PRELOAD):
        """Spawn it now, on `cores` if given (the engine's: a child starts on the
        cores of the thread that spawns it), with this process's environment."""
        context = multiprocessing.get_context("spawn")
        self._conn, theirs = context.Pipe()
        self.environment = dict(os.environ)
        self.process = context.Process(target=_serve, args=(theirs, preload), name="WarmCore")
        try:
            with born_on(cores):
                self.process.start()
        finally:
            theirs.close()
        self.taken = False

    def hand(
        self, target: Callable[..., Any], name: str, args: tuple, kwargs: dict[str, Any]
    ) -> None:
        """Run `target(*args, **kwargs)` in the process, named `name` there (what vLLM
        prefixes its log lines with), in this thread's environment and on its cores."""
        environment = dict(os.environ)
        cores = os.sched_getaffinity(0)
        self._conn.send((target, args, kwargs, name, environment, cores))
        self._conn.close()

    def stop(self) -> None:
        """End the process if it was never handed a target (it exits when its pipe
        closes)."""
        if self.taken:
            return
        self._conn.close()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


class _HandedProcess:
    """What vLLM's process manager gets for its engine core: a Process whose
    `start()` hands the target to the WarmCore; everything else is the WarmCore's
    own process."""

    def __init__(
        self,
        warm: WarmCore,
        target: Callable[..., Any],
        name: str | None,
        args: tuple,
        kwargs: dict[str, Any],
    ):
        self._warm, self._target, self._args, self._kwargs = warm, target, args, kwargs
        self.name = name or warm.process.name

    def start(self) -> None:
        self._warm.hand(self._target, self.name, self._args, self._kwargs)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._warm.process, attribute)


class _HandingContext:
    """vLLM's multiprocessing context, except that its first Process is the WarmCore."""

    def __init__(self, real: Any, warm: WarmCore):
        self._real, self._warm = real, warm

    def Process(
        self,
        target: Callable[..., Any] | None = None,
        name: str | None = None,
        args: tuple = (),
        kwargs: dict[str, Any] | None = None,
        **rest: Any,
    ) -> Any:
        if self._warm.taken or rest or target is None:
            return self._real.Process(target=target, name=name, args=args, kwargs=kwargs, **rest)
        self._warm.taken = True
        return _HandedProcess(self._warm, target, name, args, kwargs or {})

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._real, attribute)


@contextmanager
def handing_off(warm: WarmCore | None, module: ModuleType | None = None) -> Iterator[None]:
    """While AsyncLLM starts: its engine-core process is `warm` (None: vLLM spawns its
    own). However this ends, a WarmCore vLLM did not take (born with a start-time
    environment vLLM's has moved away from, or never asked for) is stopped. `module`:
    the one whose `get_mp_context` the process manager calls (VLLM_CONTEXT's)."""
    if warm is None:
        yield
        return
    try:
        module = module or importlib.import_module(VLLM_CONTEXT)
        real_context = module.get_mp_context
        module.get_mp_context = lambda: _context(real_context(), warm)
        try:
            yield
        finally:
            module.get_mp_context = real_context
    finally:
        warm.stop()


def _context(real: Any, warm: WarmCore) -> Any:
    """vLLM's own context (`real`, its side effects done: RAY_ADDRESS), or one whose
    first Process is `warm` when that can stand in for what `real` would spawn."""
    if warm.taken or not warm.process.is_alive():
        return real
    if differences := start_differences(warm.environment, os.environ):
        log.warning(
            "vLLM's engine-core process needs %s set otherwise than the warm process was "
            "born with: vLLM spawns its own (start-up is slower)",
            ", ".join(differences),
        )
        return real
    return _HandingContext(real, warm)


def _serve(conn: Connection, preload: tuple[str, ...]) -> None:
    """The WarmCore's life: import, wait for the target, become it. A module that
    does not import (another vLLM) is left to the target to import, or not."""
    for name in preload:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    try:
        target, args, kwargs, name, environment, cores = conn.recv()
    except EOFError:  # never handed a target
        return
    finally:
        conn.close()
    os.environ.clear()
    os.environ.update(environment)
    os.sched_setaffinity(0, cores)
    multiprocessing.current_process().name = name
    target(*args, **kwargs)
