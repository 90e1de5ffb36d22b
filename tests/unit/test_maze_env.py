"""Maze-v0: gymnasium compliance, seeded solvable mazes, per-step rewards, limits."""

from __future__ import annotations

import pytest
from gymnasium.utils.env_checker import check_env

from envs import make_env
from envs.maze import MOVES, MazeEnv, parse_move, scripted_episode


def test_passes_gymnasium_env_checker():
    check_env(make_env("asyncrl/Maze-v0"), skip_render_check=True)


def test_same_seed_same_maze_and_seeds_differ():
    env = MazeEnv()
    first, info = env.reset(seed=11)
    again, info_again = env.reset(seed=11)
    other, _ = env.reset(seed=12)
    assert first == again and info == info_again
    assert other != first


@pytest.mark.parametrize("seed", range(5))
def test_maze_is_perfect_so_every_cell_is_reachable(seed):
    env = MazeEnv(size=6)
    env.reset(seed=seed)
    assert env.maze is not None
    assert len(env.maze.distances(env.start)) == 36
    # a spanning tree of the cells: one passage fewer than cells
    passages = int(env.maze.open.sum()) - 36
    assert passages == 35


def test_bfs_oracle_solves_every_seed_optimally_with_the_bonus():
    for seed in range(40):
        env = MazeEnv(size=5)
        _, info = env.reset(seed=seed)
        _, rewards, last = scripted_episode(env, seed)
        components = last["reward_components"]
        assert components["solved"] == 1.0
        assert components["progress"] == pytest.approx(0.5)
        assert components["wall"] == components["invalid"] == 0.0
        assert len(rewards) == info["task"]["distance"]  # shortest path, no detours
        assert sum(rewards) == pytest.approx(sum(components.values()))


def _wall_move(env: MazeEnv) -> str:
    assert env.maze is not None
    return next(m for m in MOVES if env.maze.neighbour(env.agent, m) is None)


def test_wall_bump_is_penalised_and_the_agent_stays():
    env = MazeEnv()
    env.reset(seed=3)
    before = env.agent
    observation, reward, terminated, truncated, info = env.step(f"<move>{_wall_move(env)}</move>")
    assert reward == pytest.approx(-0.05)
    assert env.agent == before and not terminated and not truncated
    assert observation[0]["role"] == "user" and "wall" in observation[0]["content"]
    assert "reward_components" not in info  # only on the last step


def test_unreadable_move_is_penalised():
    env = MazeEnv()
    env.reset(seed=3)
    observation, reward, *_ = env.step("I am not sure.")
    assert reward == pytest.approx(-0.1)
    assert "<move>up</move>" in observation[0]["content"]


def test_walking_back_undoes_progress():
    env = MazeEnv()
    env.reset(seed=5)
    assert env.maze is not None
    move = next(m for m in MOVES if env.maze.neighbour(env.agent, m) is not None)
    back = {"up": "down", "down": "up", "left": "right", "right": "left"}[move]
    _, there, *_ = env.step(move)
    _, again, *_ = env.step(back)
    assert there != 0.0 and there + again == pytest.approx(0.0)


def test_truncates_at_max_turns_with_summed_components():
    env = MazeEnv(max_turns=3)
    env.reset(seed=0)
    wall = _wall_move(env)
    results = [env.step(f"<move>{wall}</move>") for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert not any(r[2] for r in results)
    assert results[-1][4]["reward_components"]["wall"] == pytest.approx(-0.15)
    with pytest.raises(RuntimeError, match="finished episode"):
        env.step("up")


@pytest.mark.parametrize(
    "text, move",
    [
        ("<move>UP</move>", "up"),
        ("Left looks blocked, so I go right.", "right"),
        ("<think>maybe up</think>\ndown", "down"),
        ("<move>left</move> not right", "left"),
        ("<move>north</move>", None),
        ("upward and onward", None),
        ("", None),
    ],
)
def test_moves_are_parsed_leniently(text, move):
    assert parse_move(text) == move
