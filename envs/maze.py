"""Maze-v0: a multi-turn text game without tools: walk a seeded grid maze to its goal.

Owns maze generation (randomized depth-first search, so every maze is a perfect
maze: exactly one path between any two cells, always solvable), its ASCII view,
lenient move parsing and the per-step reward. Each turn the model answers with
one move (up/down/left/right); the env replies with a user message showing the
new view. Per-step rewards are summed by the agent loop:

- `progress`: decrease in shortest-path distance to the goal, scaled so a full
  solve earns `progress_reward` (walking back costs what walking forward gained);
- `wall`: `-wall_penalty` for bumping into a wall (the agent does not move);
- `invalid`: `-invalid_penalty` for a reply with no readable move;
- `solved`: `solved_reward` on reaching the goal (the episode terminates).

The episode is truncated after `max_turns` replies. `info["reward_components"]`
on the last step holds each component summed over the episode.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

from envs.base import AnyText, Message, chat_space

Cell = tuple[int, int]
MOVES: dict[str, Cell] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
MOVE_TAG = re.compile(r"<move>\s*([a-z]+)\s*</move>", re.IGNORECASE)
MOVE_WORD = re.compile(r"\b(up|down|left|right)\b", re.IGNORECASE)
WALL, OPEN, AGENT, GOAL = "#", " ", "A", "G"
FENCE = "```"
SYSTEM_PROMPT = (
    "You are walking through a maze, one step per turn. Reply to every turn with "
    "exactly one move: <move>up</move>, <move>down</move>, <move>left</move> or "
    "<move>right</move>."
)
RULES = (
    "Find the way from A (you) to G (the goal) in this maze; # is a wall and up is "
    "toward the top row. Answer each turn with one move as <move>direction</move>. "
    "You have {max_turns} turns."
)


def parse_move(text: str) -> str | None:
    """The move a reply commits to: the last <move> tag, else the last move word.

    Reasoning before a closing </think> is ignored; a tag with an unknown word
    counts as no move (the model said something, just not a move)."""
    text = text.rsplit("</think>", 1)[-1]
    tagged = MOVE_TAG.findall(text)
    if tagged:
        word = tagged[-1].lower()
        return word if word in MOVES else None
    words = MOVE_WORD.findall(text)
    return words[-1].lower() if words else None


class Maze:
    """A size x size perfect maze stored as a (2*size+1)^2 grid of open chars;
    cell (r, c) sits at char (2r+1, 2c+1) and walls lie between cells."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.open = np.zeros((2 * size + 1, 2 * size + 1), dtype=bool)
        self._carve((int(rng.integers(size)), int(rng.integers(size))), rng)

    def _carve(self, start: Cell, rng: np.random.Generator) -> None:
        stack, visited = [start], {start}
        self.open[2 * start[0] + 1, 2 * start[1] + 1] = True
        while stack:
            r, c = stack[-1]
            options = [
                (r + dr, c + dc)
                for dr, dc in MOVES.values()
                if 0 <= r + dr < self.size
                and 0 <= c + dc < self.size
                and (r + dr, c + dc) not in visited
            ]
            if not options:
                stack.pop()
                continue
            nr, nc = options[int(rng.integers(len(options)))]
            self.open[r + nr + 1, c + nc + 1] = True  # the wall between the two cells
            self.open[2 * nr + 1, 2 * nc + 1] = True
            visited.add((nr, nc))
            stack.append((nr, nc))

    def neighbour(self, cell: Cell, move: str) -> Cell | None:
        """The cell a move leads to, or None if a wall is in the way."""
        dr, dc = MOVES[move]
        if not self.open[2 * cell[0] + 1 + dr, 2 * cell[1] + 1 + dc]:
            return None
        return cell[0] + dr, cell[1] + dc

    def distances(self, source: Cell) -> dict[Cell, int]:
        """Shortest-path distance (in moves) from `source` to every cell."""
        dist, queue = {source: 0}, deque([source])
        while queue:
            cell = queue.popleft()
            for move in MOVES:
                nxt = self.neighbour(cell, move)
                if nxt is not None and nxt not in dist:
                    dist[nxt] = dist[cell] + 1
                    queue.append(nxt)
        return dist

    def render(self, agent: Cell, goal: Cell) -> str:
        chars = [[OPEN if o else WALL for o in row] for row in self.open]
        chars[2 * goal[0] + 1][2 * goal[1] + 1] = GOAL
        chars[2 * agent[0] + 1][2 * agent[1] + 1] = AGENT
        return "\n".join("".join(row) for row in chars)


class MazeEnv(gym.Env):
    """A seeded maze per `reset(seed)`; `step(reply)` moves and returns the new view."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        size: int = 5,
        max_turns: int | None = None,
        progress_reward: float = 0.5,
        solved_reward: float = 1.0,
        wall_penalty: float = 0.05,
        invalid_penalty: float = 0.1,
        system_prompt: str | None = SYSTEM_PROMPT,
    ):
        if size < 2:
            raise ValueError("maze size must be >= 2")
        self.size = size
        self.max_turns = 2 * size * size if max_turns is None else max_turns
        if self.max_turns < 1:
            raise ValueError("max_turns must be >= 1")
        self.progress_reward = progress_reward
        self.solved_reward = solved_reward
        self.wall_penalty = wall_penalty
        self.invalid_penalty = invalid_penalty
        self.system_prompt = system_prompt
        self.observation_space = chat_space()
        self.action_space = AnyText()
        self.maze: Maze | None = None
        self.start = self.goal = self.agent = (0, 0)
        self.to_goal: dict[Cell, int] = {}
        self.turns = 0
        self.components: dict[str, float] = {}
        self.messages: list[Message] = []
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[Message, ...], dict[str, Any]]:
        super().reset(seed=seed)
        self.maze = Maze(self.size, self.np_random)
        self.start = (
            int(self.np_random.integers(self.size)),
            int(self.np_random.integers(self.size)),
        )
        from_start = self.maze.distances(self.start)
        # a goal at least half the farthest distance away keeps every task non-trivial
        far = max(from_start.values())
        candidates = sorted(cell for cell, d in from_start.items() if 2 * d >= far and d > 0)
        self.goal = candidates[int(self.np_random.integers(len(candidates)))]
        self.to_goal = self.maze.distances(self.goal)
        self.agent = self.start
        self.turns = 0
        self.components = {"progress": 0.0, "wall": 0.0, "invalid": 0.0, "solved": 0.0}
        self._done = False
        opening = RULES.format(max_turns=self.max_turns) + "\n\n" + self._view()
        self.messages = (
            [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        )
        self.messages.append({"role": "user", "content": opening})
        task = {
            "size": self.size,
            "start": list(self.start),
            "goal": list(self.goal),
            "distance": self.to_goal[self.start],
        }
        return tuple(dict(m) for m in self.messages), {"task": task}

    def step(self, action: str) -> tuple[tuple[Message, ...], float, bool, bool, dict[str, Any]]:
        if self._done or self.maze is None:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        self.turns += 1
        self.messages.append({"role": "assistant", "content": action})
        move = parse_move(action)
        reward = {"progress": 0.0, "wall": 0.0, "invalid": 0.0, "solved": 0.0}
        if move is None:
            reward["invalid"] = -self.invalid_penalty
            event = "I could not read a move. Answer with <move>up</move>, <move>down</move>, "
            event += "<move>left</move> or <move>right</move>."
        elif (nxt := self.maze.neighbour(self.agent, move)) is None:
            reward["wall"] = -self.wall_penalty
            event = f"You bumped into a wall moving {move}; you did not move."
        else:
            gained = self.to_goal[self.agent] - self.to_goal[nxt]
            reward["progress"] = self.progress_reward * gained / self.to_goal[self.start]
            self.agent = nxt
            event = f"You moved {move}."
        terminated = self.agent == self.goal
        if terminated:
            reward["solved"] = self.solved_reward
            event += f" You reached the goal in {self.turns} turns!"
        truncated = not terminated and self.turns >= self.max_turns
        if truncated:
            event += " You are out of turns."
        for name, value in reward.items():
            self.components[name] += value
        reply = {"role": "user", "content": event + "\n\n" + self._view()}
        self.messages.append(reply)
        info: dict[str, Any] = {"turns": self.turns, "distance": self.to_goal[self.agent]}
        if terminated or truncated:
            self._done = True
            info["reward_components"] = dict(self.components)
        return (dict(reply),), float(sum(reward.values())), terminated, truncated, info

    def _view(self) -> str:
        assert self.maze is not None
        return f"{FENCE}\n{self.maze.render(self.agent, self.goal)}\n{FENCE}"


def scripted_reply(messages: list[Message]) -> str:
    """A BFS-optimal player that reads only the conversation: it finds the last
    map shown to it and answers with the first move of a shortest path."""
    text = next(m["content"] for m in reversed(messages) if FENCE in m["content"])
    grid = text.split(FENCE)[-2].strip("\n").split("\n")
    find = {
        ch: (r, row.index(ch)) for r, row in enumerate(grid) for ch in (AGENT, GOAL) if ch in row
    }
    came_from: dict[Cell, str | None] = {find[AGENT]: None}
    queue = deque([find[AGENT]])
    while queue:
        r, c = queue.popleft()
        if (r, c) == find[GOAL]:
            break
        for move, (dr, dc) in MOVES.items():
            nxt = (r + dr, c + dc)
            if grid[nxt[0]][nxt[1]] != WALL and nxt not in came_from:
                came_from[nxt] = came_from[(r, c)] or move  # remember the first move taken
                queue.append(nxt)
    return f"<move>{came_from[find[GOAL]]}</move>"


def scripted_episode(env: MazeEnv, seed: int) -> tuple[list[Message], list[float], dict[str, Any]]:
    """Play a whole episode with `scripted_reply`: messages, step rewards, last info."""
    env.reset(seed=seed)
    rewards: list[float] = []
    terminated = truncated = False
    info: dict[str, Any] = {}
    while not (terminated or truncated):
        _, reward, terminated, truncated, info = env.step(scripted_reply(env.messages))
        rewards.append(reward)
    return [dict(m) for m in env.messages], rewards, info
