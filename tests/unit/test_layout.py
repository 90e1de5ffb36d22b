"""The layout stays honest: every module imports, and imports flow one way.

core <- rewards <- envs <- rollout, core <- learner; rollout and learner never
import each other; only the control plane imports both (and rollout.launch,
the entry point, imports the control plane). core imports no heavy library.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["core", "rewards", "envs", "rollout", "learner", "orchestrator"]
ALLOWED = {
    "core": {"core"},
    "rewards": {"core", "rewards"},
    "envs": {"core", "rewards", "envs"},
    "rollout": {"core", "rewards", "envs", "rollout"},
    "learner": {"core", "learner"},
    "orchestrator": set(PACKAGES),
}
ENTRY_POINTS = {"rollout/launch.py": {"orchestrator"}}
HEAVY = {"torch", "vllm", "ray", "deepspeed", "transformers"}


def _modules():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path, top_level_only: bool):
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path):
    package = path.relative_to(ROOT).parts[0]
    allowed = ALLOWED[package] | ENTRY_POINTS.get(str(path.relative_to(ROOT)), set())
    ours = {name for name in _imports(path, top_level_only=False) if name in PACKAGES}
    assert ours <= allowed, f"{path.relative_to(ROOT)} imports {sorted(ours - allowed)}"


@pytest.mark.parametrize("path", sorted((ROOT / "core").rglob("*.py")), ids=lambda p: p.name)
def test_core_imports_nothing_heavy_at_import_time(path):
    assert not set(_imports(path, top_level_only=True)) & HEAVY


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_imports_and_says_what_it_owns(path):
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    module = importlib.import_module(name)
    assert module.__doc__ and module.__doc__.strip(), f"{name} has no module docstring"
