"""The layout stays honest: every module imports, and imports flow one way.

core <- rewards <- envs <- rollout, core <- learner; bootstrap (the starting
policy) builds on core and envs; only the control plane imports rollout and
learner both (and rollout.launch, the entry point, imports the control plane);
bench/ may use all of them, nobody imports bench/ or tests/; hydra_plugins (loaded
by every Hydra process) imports none of ours. core and hydra_plugins import no
heavy library at import time.

Every import counts: absolute, relative (resolved against the module's package),
lazy ones inside functions, and `importlib.import_module("...")` / `__import__`
with a literal name. The rollout and learner planes meet only through core types
and the control plane: no chain of imports leads from a rollout module to a
learner module or back, not even through the entry point.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ["core", "rewards", "envs", "rollout", "learner", "orchestrator"]
PACKAGES = [*PRODUCT, "bootstrap", "bench", "hydra_plugins"]
OURS = {*PACKAGES, "tests"}
ALLOWED = {
    "core": {"core"},
    "rewards": {"core", "rewards"},
    "envs": {"core", "rewards", "envs"},
    "rollout": {"core", "rewards", "envs", "rollout"},
    "learner": {"core", "learner"},
    "bootstrap": {"core", "rewards", "envs", "bootstrap"},
    "orchestrator": {*PRODUCT, "bootstrap"},
    "bench": {*PRODUCT, "bootstrap", "bench"},
    "hydra_plugins": {"hydra_plugins"},
}
ENTRY_POINTS = {"rollout.launch": {"orchestrator"}, "rollout.evaluate": {"orchestrator"}}
"""Command-line entry points, which read the command line with orchestrator.cli."""
PLANES = ("rollout", "learner")
"""Neither reaches the other through any chain of imports."""
HEAVY = {"torch", "vllm", "ray", "deepspeed", "transformers"}
LIGHT = ["core", "hydra_plugins"]
"""Import nothing heavy at import time (hydra_plugins loads in every Hydra process)."""


# --- the checker: pure functions of source text ---------------------------------


def module_name(path: Path, root: Path = ROOT) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every dotted name `source` (the text of `module`) imports, wherever the import
    sits: `import a.b`, `from a import b` (as `a.b`), relative imports resolved
    (`..` past the top-level package gives a name starting with "."), and
    `importlib.import_module` / `__import__` called with a literal name."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, package)
            beyond = base.startswith(".")
            names |= {base} if beyond else {base} | {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Call) and (literal := _dynamic_import(node)):
            level = len(literal) - len(literal.lstrip("."))
            names.add(_resolve(literal.lstrip("."), level, package))
    return {name for name in names if name}


def _resolve(name: str, level: int, package: str) -> str:
    if level == 0:
        return name
    parts = package.split(".") if package else []
    if level - 1 >= len(parts):
        return "." * level + name  # beyond the top-level package: reported as is
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{name}" if name else base


def _dynamic_import(call: ast.Call) -> str | None:
    """The literal module name of `importlib.import_module("x")`, `import_module("x")`
    or `__import__("x")`; None for any other call or a computed name."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called not in ("import_module", "__import__") or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def top_level_imports(source: str) -> set[str]:
    """Top-level package names imported by the module's own body (import time)."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def layer_violations(module: str, imported: set[str]) -> list[str]:
    """The imports of `module` its package may not make, one line each."""
    package = module.split(".")[0]
    allowed = ALLOWED[package] | ENTRY_POINTS.get(module, set())
    found = []
    for name in sorted(imported):
        top = name.split(".")[0]
        if name.startswith("."):
            found.append(f"{module}: relative import {name} goes beyond its package")
        elif top in OURS and top not in allowed:
            found.append(f"{module} imports {name} ({package} may import {sorted(allowed)})")
    return found


def crossing(graph: Mapping[str, set[str]], start: str, forbidden: str) -> list[str] | None:
    """A chain of imports from module `start` to a module of package `forbidden`
    (importing `a.b.c` runs `a` and `a.b` first), or None."""
    parents = {start: ""}
    queue = [start]
    while queue:
        current = queue.pop(0)
        if current.split(".")[0] == forbidden:
            chain = [current]
            while parents[chain[-1]]:
                chain.append(parents[chain[-1]])
            return chain[::-1]
        for name in sorted(graph.get(current, set())):
            for target in _modules_run_by(name, graph):
                if target not in parents:
                    parents[target] = current
                    queue.append(target)
    return None


def _modules_run_by(name: str, graph: Mapping[str, set[str]]) -> list[str]:
    """The known modules that `import name` executes: each enclosing package, then
    the module itself (`from a import b` names `a.b`, which may be an attribute)."""
    parts = name.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in graph]


# --- the repository --------------------------------------------------------------


def _files() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def _graph() -> dict[str, set[str]]:
    return {
        module_name(path): imports_of(path.read_text(), module_name(path), path.stem == "__init__")
        for path in _files()
    }


GRAPH = _graph()
IDS = {"ids": lambda p: str(p.relative_to(ROOT))}


@pytest.mark.parametrize("path", _files(), **IDS)
def test_imports_flow_one_way(path):
    module = module_name(path)
    assert not layer_violations(module, GRAPH[module])


@pytest.mark.parametrize(
    ("start", "forbidden"),
    # (the entry point itself starts the control plane, which imports both: not a start)
    [
        (m, b)
        for m in GRAPH
        for a, b in (PLANES, PLANES[::-1])
        if m.split(".")[0] == a and m not in ENTRY_POINTS
    ],
)
def test_rollout_and_learner_meet_only_through_core_and_the_control_plane(start, forbidden):
    assert crossing(GRAPH, start, forbidden) is None


@pytest.mark.parametrize("path", [p for pkg in LIGHT for p in sorted((ROOT / pkg).rglob("*.py"))])
def test_light_packages_import_nothing_heavy_at_import_time(path):
    assert not top_level_imports(path.read_text()) & HEAVY


@pytest.mark.parametrize("path", _files(), **IDS)
def test_every_module_imports_and_says_what_it_owns(path):
    name = module_name(path)
    module = importlib.import_module(name)
    assert module.__doc__ and module.__doc__.strip(), f"{name} has no module docstring"


# --- each rule fires on a planted violation ---------------------------------------


def _violations(module: str, source: str, is_package: bool = False) -> list[str]:
    return layer_violations(module, imports_of(source, module, is_package))


@pytest.mark.parametrize(
    ("module", "source", "culprit"),
    [
        ("rollout.agent", "import learner.trainer", "learner.trainer"),
        ("rollout.agent", "def f():\n    from learner import trainer", "learner.trainer"),
        ("rollout.agent", "import importlib\nimportlib.import_module('learner.fp8')", "learner"),
        (
            "rollout.agent",
            "from importlib import import_module\nimport_module('learner')",
            "learner",
        ),
        ("learner.trainer", "__import__('rollout.engine')", "rollout.engine"),
        ("core.types", "x = __import__('envs')", "envs"),
        ("learner.trainer", "from bootstrap.build import build_model", "bootstrap"),
        ("bootstrap.tiny", "from learner.batching import pad", "learner"),
        ("bootstrap.tiny", "from orchestrator.run import run", "orchestrator"),
        ("orchestrator.run", "from bench.record import write_json", "bench"),
        ("orchestrator.run", "from tests.tiny_models import x", "tests"),
        ("bench.envs", "import tests.conftest", "tests"),
        ("hydra_plugins.asyncrl_env_configs", "from core.config import Config", "core"),
        ("rollout.agent", "from ...learner import trainer", "beyond its package"),
    ],
)
def test_layer_rule_fires_on_a_planted_import(module, source, culprit):
    problems = _violations(module, source)
    assert any(culprit in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("rollout.agent", "from core.types import Trajectory\nfrom .engine import Engine"),
        ("rollout.launch", "from orchestrator.run import run"),  # the entry point
        ("bench.chaos.driver", "from . import schedule\nfrom orchestrator.ledger import Audit"),
        ("bootstrap.tiny", "from envs import make_env\nfrom .cache import cached_build"),
        ("rollout.agent", "importlib.import_module(name)"),  # computed: the registry's
    ],
)
def test_layer_rule_passes_allowed_imports(module, source):
    assert _violations(module, source) == []


def test_relative_and_dynamic_imports_resolve_to_module_names():
    source = (
        "from . import engine\nfrom .router import Router\nfrom .. import x\n"
        "importlib.import_module('.worker', __package__)\n"
    )
    assert imports_of(source, "rollout.agent") == {
        "rollout",
        "rollout.engine",
        "rollout.router",
        "rollout.router.Router",
        "rollout.worker",
        "..",
    }
    assert imports_of("from .cache import cached_build", "bootstrap", is_package=True) == {
        "bootstrap.cache",
        "bootstrap.cache.cached_build",
    }


def test_plane_rule_finds_a_chain_through_the_entry_point():
    graph = {
        "rollout": set(),
        "rollout.agent": {"rollout.launch"},  # e.g. `from .launch import main`
        "rollout.launch": {"orchestrator.run"},
        "orchestrator": set(),
        "orchestrator.run": {"learner.trainer.Trainer"},
        "learner": set(),
        "learner.trainer": {"core.types"},
        "core": set(),
        "core.types": set(),
    }
    assert crossing(graph, "rollout.agent", "learner") == [
        "rollout.agent",
        "rollout.launch",
        "orchestrator.run",
        "learner",
    ]
    graph["rollout.agent"] = {"core.types"}
    assert crossing(graph, "rollout.agent", "learner") is None
    assert crossing(graph, "learner.trainer", "rollout") is None


def test_plane_rule_follows_package_inits():
    graph = {"envs": {"learner.fp8"}, "envs.base": set(), "learner": set(), "learner.fp8": set()}
    graph["rollout.agent"] = {"envs.base"}  # importing envs.base runs envs/__init__.py
    assert crossing(graph, "rollout.agent", "learner") == ["rollout.agent", "envs", "learner"]


def test_heavy_rule_fires_on_a_planted_import():
    assert top_level_imports("import torch\nfrom vllm import LLM") & HEAVY == {"torch", "vllm"}
    assert not top_level_imports("def f():\n    import torch") & HEAVY  # lazy: allowed


def test_the_repository_graph_covers_every_package():
    assert {m.split(".")[0] for m in GRAPH} == set(PACKAGES)
