"""Tool-using gymnasium environments and the plugin mechanism.

Built-in envs are registered with gymnasium under the `asyncrl/` namespace.
Third-party envs come in three ways, all ending in `gymnasium.make`:
- a package registers them through the entry-point group `asyncrl.envs`
  (an entry point names a module or a callable; loading it registers the envs);
- `env.id=pkg.module:Name-v0` imports `pkg.module`, which registers `Name-v0`;
- `env.id=pkg.module:ClassName` names an Env class directly.
"""

from __future__ import annotations

import asyncio
import importlib
from importlib.metadata import entry_points
from typing import Any

import gymnasium as gym

ENTRY_POINT_GROUP = "asyncrl.envs"
_BUILTINS = {
    "asyncrl/Calculator-v0": "envs.calculator:CalculatorEnv",
    "asyncrl/Dataset-v0": "envs.dataset:DatasetEnv",
    "asyncrl/Code-v0": "envs.code:CodeEnv",
    "asyncrl/Search-v0": "envs.search:SearchEnv",
    "asyncrl/Maze-v0": "envs.maze:MazeEnv",
    "asyncrl/Shapes-v0": "envs.shapes:ShapesEnv",
    "asyncrl/ReasoningGym-v0": "envs.adapters.reasoning_gym:ReasoningGymEnv",
    "asyncrl/TextArena-v0": "envs.adapters.textarena:TextArenaEnv",
}
_plugins_loaded = False


class EnvConfigError(ValueError):
    """The configured environment cannot be found or built."""


def register_builtins() -> None:
    for env_id, entry_point in _BUILTINS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)


def load_plugins() -> list[str]:
    """Load every `asyncrl.envs` entry point once; returns their names."""
    global _plugins_loaded
    register_builtins()
    names: list[str] = []
    if _plugins_loaded:
        return names
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        if callable(loaded) and not isinstance(loaded, type):
            loaded()
        names.append(entry.name)
    _plugins_loaded = True
    return names


def make_env(env_id: str, kwargs: dict[str, Any] | None = None) -> gym.Env:
    """Build an environment by registered id, `module:Id-v0` or `module:Class`.

    Returns the unwrapped env: the agent loop drives ToolEnvs through `astep`,
    which gymnasium's wrappers do not forward."""
    load_plugins()
    kwargs = dict(kwargs or {})
    module_name, _, attr = env_id.partition(":")
    if attr and not attr.endswith(tuple(f"-v{i}" for i in range(100))):
        cls = _import_attr(module_name, attr)
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise EnvConfigError(f"environment {env_id!r} rejects env.kwargs: {exc}") from exc
    try:
        env = gym.make(env_id, disable_env_checker=True, **kwargs)
    except gym.error.Error as exc:
        known = ", ".join(sorted(k for k in gym.registry if "/" in k)) or "none"
        raise EnvConfigError(
            f"unknown environment {env_id!r} ({exc}); registered: {known}"
        ) from exc
    except ModuleNotFoundError as exc:
        raise EnvConfigError(f"environment {env_id!r}: cannot import its module ({exc})") from exc
    except TypeError as exc:
        raise EnvConfigError(f"environment {env_id!r} rejects env.kwargs: {exc}") from exc
    return env.unwrapped


async def astep(env: gym.Env, action: str) -> tuple[Any, float, bool, bool, dict[str, Any]]:
    """Step any env from an event loop: ToolEnvs natively, others in a thread."""
    native = getattr(env, "astep", None)
    if native is not None:
        return await native(action)
    return await asyncio.to_thread(env.step, action)


def _import_attr(module_name: str, attr: str) -> Any:
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise EnvConfigError(f"cannot import environment {module_name}:{attr} ({exc})") from exc


register_builtins()
