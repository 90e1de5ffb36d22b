"""Hydra finds the config groups that env plugins ship.

Every package registered under the `asyncrl.envs` entry-point group may carry a
`conf/` directory (e.g. `conf/env/mygame.yaml`); it joins Hydra's search path,
so `python -m rollout.launch env=mygame` works once the package is installed.
Hydra discovers this module itself (the `hydra_plugins` namespace package).
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ENTRY_POINT_GROUP = "asyncrl.envs"


def plugin_config_packages() -> list[str]:
    """`pkg.conf` for each env plugin package that has a conf/ directory."""
    found = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        package = entry.module.split(".")[0]
        spec = importlib.util.find_spec(package)
        locations = spec.submodule_search_locations if spec else None
        if locations and any((Path(p) / "conf").is_dir() for p in locations):
            found.append(f"{package}.conf")
    return sorted(set(found))


class AsyncrlEnvConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for package in plugin_config_packages():
            search_path.append(provider=f"asyncrl-plugin-{package}", path=f"pkg://{package}")
