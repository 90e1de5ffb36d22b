"""TextArena-v0: one single-player `textarena` game as a multi-turn chat env.

Owns driving the game: each batch of new game messages becomes one user message
(the game's echo of the model's own move is dropped), each assistant reply is
one game action, and the game's final reward for player 0 is the episode's
reward (per-step reward 0 until the end). The episode is truncated, reward 0,
after `max_turns` replies if the game has not ended. A game that crashes
mid-episode is the environment's fault: the episode ends with `info["failure"]`.

Only games that run offline are accepted: before a game's module is imported
its source is checked for nltk downloads and LLM/web clients, and such games,
multi-player games and games that fail to start are one-line EnvConfigErrors.

textarena games draw from the global `random` (some from numpy's global RNG)
and seed it on reset; each env keeps its own copy of both generator states and
swaps it in under a process-wide lock around every game call, so concurrent
episodes stay reproducible and other code's global RNG is left as it was.
"""

from __future__ import annotations

import difflib
import random
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs import EnvConfigError
from envs.base import AnyText, Message, chat_space

OFFLINE_EXAMPLES = "GuessTheNumber-v0, TowerOfHanoi-v0, Minesweeper-v0, FrozenLake-v0"
NEEDS_NETWORK = re.compile(r"\bnltk\b|OpenRouter|\bopenai\b|\brequests\b|urllib|\.download\(")
IMPORTS = re.compile(r"^\s*from (textarena\.envs\.[\w.]+) import", re.MULTILINE)
NOTHING_NEW = "(the game has nothing new to say)"
_GLOBAL_RNG = threading.Lock()


class TextArenaEnv(gym.Env):
    """A textarena game per `reset(seed)`; `step(reply)` plays one move."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        game: str = "GuessTheNumber-v0",
        max_turns: int = 30,
        system_prompt: str | None = None,
    ):
        if max_turns < 1:
            raise EnvConfigError("textarena max_turns must be >= 1")
        self.game_id = game
        self.max_turns = max_turns
        self.system_prompt = system_prompt
        self.observation_space = chat_space()
        self.action_space = AnyText()
        self.game = make_game(game)
        self._rng_state = _seeded_state(0)
        self._done = True
        self.turns = 0
        try:  # one probe game: a multi-player game or missing data fails here, not mid-run
            with self._own_rng():
                self.game.reset(num_players=1, seed=0)
        except Exception as exc:  # noqa: BLE001 - any failure means the game is unusable
            raise EnvConfigError(
                f"textarena game {game!r} fails to start as a single-player game "
                f"({type(exc).__name__}: {exc}); "
                f"offline single-player games include {OFFLINE_EXAMPLES}"
            ) from exc

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[Message, ...], dict[str, Any]]:
        super().reset(seed=seed)
        game_seed = seed if seed is not None else int(self.np_random.integers(2**31))
        self._rng_state = _seeded_state(game_seed)
        with self._own_rng():
            self.game.reset(num_players=1, seed=game_seed)
            _, observations = self.game.get_observation()
        self.turns = 0
        self._done = False
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": render(observations) or NOTHING_NEW})
        return tuple(messages), {"task": {"game": self.game_id, "seed": game_seed}}

    def step(self, action: str) -> tuple[tuple[Message, ...], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        self.turns += 1
        info: dict[str, Any] = {"turns": self.turns}
        try:
            with self._own_rng():
                done, _ = self.game.step(format_action(action))
                _, observations = self.game.get_observation()
                reward, reason = _final_reward(self.game.close()) if done else (0.0, "")
        except Exception as exc:  # noqa: BLE001 - a crashing game is the env's fault
            self._done = True
            info["failure"] = f"textarena {self.game_id} crashed: {type(exc).__name__}: {exc}"
            return (), 0.0, True, False, info
        truncated = not done and self.turns >= self.max_turns
        text = "\n\n".join(p for p in (render(observations), reason) if p)
        reply = ({"role": "user", "content": text or NOTHING_NEW},)
        if not (done or truncated):
            return reply, 0.0, False, False, info
        self._done = True
        info["reward_components"] = {"game": reward}
        info["outcome"] = reason if done else f"truncated after {self.turns} turns"
        return reply, reward, bool(done), truncated, info

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        with _GLOBAL_RNG:
            outer = random.getstate(), np.random.get_state()
            random.setstate(self._rng_state[0])
            np.random.set_state(self._rng_state[1])
            try:
                yield
            finally:
                self._rng_state = random.getstate(), np.random.get_state()
                random.setstate(outer[0])
                np.random.set_state(outer[1])


def make_game(game: str) -> Any:
    """The unwrapped textarena env for `game`; refused before import if it needs the network."""
    import textarena
    from textarena.envs.registration import ENV_REGISTRY

    if game not in ENV_REGISTRY:
        close = difflib.get_close_matches(game, list(ENV_REGISTRY), n=3)
        raise EnvConfigError(
            f"unknown textarena game {game!r}; did you mean one of {close}? "
            f"Offline single-player games include {OFFLINE_EXAMPLES}"
        )
    entry_point = ENV_REGISTRY[game].entry_point
    if isinstance(entry_point, str):
        needs = _network_needs(Path(textarena.__file__).parent.parent, entry_point.split(":")[0])
        if needs:
            raise EnvConfigError(
                f"textarena game {game!r} needs data or services from the network "
                f"({', '.join(needs)}); offline single-player games include {OFFLINE_EXAMPLES}"
            )
    try:
        env = textarena.make(game)
    except Exception as exc:  # noqa: BLE001 - several games do not even import
        raise EnvConfigError(
            f"textarena game {game!r} cannot be built ({type(exc).__name__}: {exc})"
        ) from exc
    while isinstance(env, textarena.Wrapper):  # we render observations ourselves
        env = env.env
    return env


def _network_needs(root: Path, module: str) -> list[str]:
    """Network markers in a game module's source and the textarena modules it imports."""
    found: set[str] = set()
    pending, seen = [module], set()
    while pending:
        name = pending.pop()
        seen.add(name)
        base = root / name.replace(".", "/")
        path = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if not path.exists():
            continue
        source = path.read_text(encoding="utf-8", errors="replace")
        found.update(NEEDS_NETWORK.findall(source))
        pending.extend(set(IMPORTS.findall(source)) - seen)
    return sorted(found)


def format_action(text: str) -> str:
    """textarena actions are bracketed, e.g. "[5]"; reasoning before </think> is
    dropped, and a reply without brackets is wrapped whole (as textarena's own
    ActionFormattingWrapper does)."""
    text = text.rsplit("</think>", 1)[-1].strip()
    return text if "[" in text or "]" in text else f"[{text}]"


def render(observations: list[Any]) -> str:
    """New game messages as one text, without the echo of the player's own move."""
    parts = []
    for item in observations:
        kind = getattr(item[2], "name", item[2]) if len(item) > 2 else None
        if kind != "PLAYER_ACTION":
            parts.append(str(item[1]).strip())
    return "\n\n".join(p for p in parts if p)


def _final_reward(outcome: Any) -> tuple[float, str]:
    """Player 0's reward and the game's stated reason from textarena's `close()`."""
    rewards, game_info = outcome if isinstance(outcome, tuple) else (outcome, {})
    reward = float((rewards or {}).get(0, 0.0))  # a ValueError here is a game bug
    return reward, str((game_info or {}).get(0, {}).get("reason", ""))


def _seeded_state(seed: int) -> tuple[Any, Any]:
    return random.Random(seed).getstate(), np.random.RandomState(seed % 2**32).get_state()
