"""rollout.warm_core: the environment rules, and a real spawned WarmCore handed a
target through a stand-in for vLLM's process manager (the vLLM engine itself:
tests/integration/test_rollout_engines.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import types
from pathlib import Path

import pytest

from rollout.warm_core import WarmCore, born_on, cpu_preload, handing_off, start_differences

LIGHT = ("json",)
"""What the test WarmCores import before they wait (vLLM would take ~6 s)."""


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_preload_is_what_vllms_cpu_platform_leaves(tmp_path):
    """vllm/platforms/cpu.py:442-510: torch's libgomp appended unless an OpenMP runtime
    is preloaded, then vLLM's tcmalloc put first unless one is."""
    torch_dir, vllm_dir = tmp_path / "torch", tmp_path / "vllm"
    gomp = _touch(tmp_path / "torch.libs" / "libgomp-a34b3233.so.1")
    tcmalloc = _touch(vllm_dir / "libs" / "libtcmalloc_minimal.so.4")
    torch_dir.mkdir(exist_ok=True)

    assert cpu_preload("", torch_dir, vllm_dir) == f"{tcmalloc}:{gomp}"
    assert cpu_preload("/x/libfoo.so", torch_dir, vllm_dir) == f"{tcmalloc}:/x/libfoo.so:{gomp}"
    assert cpu_preload("/x/libiomp5.so", torch_dir, vllm_dir) == f"{tcmalloc}:/x/libiomp5.so"
    kept = f"/y/libtcmalloc.so:{gomp}"
    assert cpu_preload(kept, torch_dir, vllm_dir) == kept


def test_preload_without_the_libraries_is_left_alone(tmp_path):
    (tmp_path / "torch").mkdir()
    assert cpu_preload("", tmp_path / "torch", tmp_path / "vllm") == ""
    gomp = _touch(tmp_path / "torch" / "lib" / "libgomp.so.1")  # torch/lib, the other place
    assert cpu_preload("", tmp_path / "torch", tmp_path / "vllm") == str(gomp)


def test_only_variables_read_at_start_count(tmp_path):
    born = {"LD_PRELOAD": "/a.so", "OMP_NUM_THREADS": "1", "VLLM_X": "1"}
    assert start_differences(born, born | {"VLLM_X": "2", "RAY_ADDRESS": "h:1"}) == []
    assert start_differences(born, born | {"LD_PRELOAD": "/b.so"}) == ["LD_PRELOAD"]
    assert start_differences(born, {**born, "OMP_NUM_THREADS": "2", "MALLOC_ARENA_MAX": "2"}) == [
        "MALLOC_ARENA_MAX",
        "OMP_NUM_THREADS",
    ]
    assert start_differences(born, {k: v for k, v in born.items() if k != "LD_PRELOAD"}) == [
        "LD_PRELOAD"
    ]


def test_library_path_counts_by_the_directories_that_exist(tmp_path):
    """What importing cv2 leaves (cv2/__init__.py:146-147): its lib64, absent here,
    and an empty entry; a directory that exists changes the search."""
    absent = f"{tmp_path / 'cv2' / '..' / '..' / 'lib64'}:"
    assert start_differences({}, {"LD_LIBRARY_PATH": absent}) == []
    assert start_differences({}, {"LD_LIBRARY_PATH": f"{tmp_path}:"}) == ["LD_LIBRARY_PATH"]


def report(path: str, tag: str) -> None:
    """A target for the WarmCore: what the process it runs in looks like."""
    Path(path).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "tag": tag,
                "handed": os.environ.get("ASYNCRL_HANDED"),
                "cores": sorted(os.sched_getaffinity(0)),
                "name": multiprocessing.current_process().name,
            }
        )
    )


def _vllm_like(context_method: str = "spawn") -> types.ModuleType:
    """A module with vLLM's `get_mp_context` (vllm/utils/system_utils.py:164)."""
    module = types.ModuleType("vllm_like")
    module.get_mp_context = lambda: multiprocessing.get_context(context_method)
    return module


def _as_vllm_starts_it(module: types.ModuleType, out: Path, tag: str):
    """What CoreEngineProcManager does (vllm/v1/engine/utils.py:256-329)."""
    proc = module.get_mp_context().Process(
        target=report, name="EngineCore", kwargs={"path": str(out), "tag": tag}
    )
    proc.start()
    proc.join(60)
    return proc


def _send_cores(conn) -> None:
    conn.send(sorted(os.sched_getaffinity(0)))
    conn.close()


def test_a_process_started_in_born_on_lives_on_those_cores_and_the_thread_gets_its_own_back():
    everywhere = os.sched_getaffinity(0)
    core = max(everywhere)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    with pytest.raises(RuntimeError, match="inside"), born_on({core}):
        proc = context.Process(target=_send_cores, args=(theirs,))
        proc.start()
        assert os.sched_getaffinity(0) == {core}
        raise RuntimeError("inside")
    assert os.sched_getaffinity(0) == everywhere
    assert ours.recv() == [core]
    proc.join(timeout=30)
    with born_on(None):  # nothing to bind: the thread stays where it is
        assert os.sched_getaffinity(0) == everywhere


@pytest.fixture
def handed_variable():
    yield
    os.environ.pop("ASYNCRL_HANDED", None)


def test_the_engine_core_vllm_starts_is_the_warm_process(tmp_path, handed_variable):
    core = max(os.sched_getaffinity(0))
    warm = WarmCore({core}, LIGHT)
    os.environ["ASYNCRL_HANDED"] = "after birth"  # as vLLM sets its variables late
    module = _vllm_like()
    out = tmp_path / "ran.json"
    with handing_off(warm, module), born_on({core}):  # as rollout.engine binds the thread
        proc = _as_vllm_starts_it(module, out, "engine")
    ran = json.loads(out.read_text())
    assert ran["pid"] == warm.process.pid == proc.pid
    assert ran == ran | {"tag": "engine", "handed": "after birth", "name": "EngineCore"}
    assert ran["cores"] == [core], "the starting thread's cores"
    assert proc.exitcode == 0 and proc.sentinel == warm.process.sentinel
    assert module.get_mp_context().__class__ is multiprocessing.get_context("spawn").__class__


def test_a_start_time_variable_moved_since_birth_gets_vllm_its_own_process(
    tmp_path, monkeypatch, caplog
):
    warm = WarmCore(None, LIGHT)
    monkeypatch.setenv("LD_PRELOAD", os.environ.get("LD_PRELOAD", "") + ":/nonexistent/lib.so")
    module = _vllm_like()
    out = tmp_path / "ran.json"
    with handing_off(warm, module):
        proc = _as_vllm_starts_it(module, out, "engine")
    assert json.loads(out.read_text())["pid"] == proc.pid != warm.process.pid
    assert "LD_PRELOAD" in caplog.text
    assert not warm.process.is_alive() and warm.process.exitcode == 0, "stopped, not left"


def test_a_warm_process_never_handed_anything_exits_when_stopped():
    warm = WarmCore(None, (*LIGHT, "no_such_module_in_this_vllm"))
    with handing_off(warm, _vllm_like()):
        pass  # vLLM failed before it spawned
    warm.process.join(10)
    assert warm.process.exitcode == 0


def test_a_failure_while_vllm_starts_stops_the_warm_process():
    warm = WarmCore(None, LIGHT)
    with pytest.raises(RuntimeError, match="engine args"), handing_off(warm, _vllm_like()):
        raise RuntimeError("bad engine args")
    warm.process.join(10)
    assert warm.process.exitcode == 0


def test_only_the_first_process_is_the_warm_one(tmp_path):
    warm = WarmCore(None, LIGHT)
    module = _vllm_like()
    with handing_off(warm, module):
        first = _as_vllm_starts_it(module, tmp_path / "1.json", "first")
        second = _as_vllm_starts_it(module, tmp_path / "2.json", "second")
    assert first.pid == warm.process.pid != second.pid
    assert json.loads((tmp_path / "2.json").read_text())["pid"] == second.pid


@pytest.mark.parametrize(
    ("prespawn", "core", "spawned"),
    [(True, 1, {1}), (False, 1, None), (True, None, None)],
)
def test_the_knob_and_the_engines_shape_decide_whether_it_is_spawned(
    monkeypatch, prespawn, core, spawned
):
    """rollout.prespawn_engine_core, where the engine runs its model in the engine-core
    process (a CPU engine bound to a core); otherwise vLLM spawns its own, as before."""
    import rollout.engine
    from core.config import RolloutConfig

    born: list[set[int] | None] = []
    monkeypatch.setattr(rollout.engine, "born_with", lambda: None)
    monkeypatch.setattr(rollout.engine, "WarmCore", lambda cores: born.append(cores) or cores)
    cfg = RolloutConfig(prespawn_engine_core=prespawn)
    engine = rollout.engine.Engine("/no/model", cfg, "float32", 0, core)
    assert engine._prespawn() == spawned
    assert born == ([] if spawned is None else [spawned])
