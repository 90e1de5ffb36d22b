"""Third-party suite adapters: reasoning_gym datasets and textarena games as asyncrl envs."""

from __future__ import annotations

import random
import sys

import pytest
from gymnasium.utils.env_checker import check_env

from envs import EnvConfigError, make_env
from envs.adapters.reasoning_gym import ReasoningGymEnv, extract_answer
from envs.adapters.textarena import TextArenaEnv, format_action

RG = "asyncrl/ReasoningGym-v0"
TA = "asyncrl/TextArena-v0"

# -- reasoning_gym ----------------------------------------------------------------------


def test_reasoning_gym_passes_gymnasium_env_checker():
    check_env(make_env(RG, {"dataset": "basic_arithmetic", "size": 20}), skip_render_check=True)


def test_reasoning_gym_task_is_entry_seed_mod_size_and_datasets_are_cached():
    env = ReasoningGymEnv(dataset="basic_arithmetic", size=20)
    first, info = env.reset(seed=3)
    again, _ = env.reset(seed=23)
    assert first == again and info["task"]["index"] == 3
    assert first[-1] == {"role": "user", "content": info["task"]["question"]}
    assert ReasoningGymEnv(dataset="basic_arithmetic", size=20).dataset is env.dataset


@pytest.mark.parametrize("dataset", ["basic_arithmetic", "leg_counting"])
def test_reasoning_gym_own_answer_scores_one_and_a_wrong_one_zero(dataset):
    env = ReasoningGymEnv(dataset=dataset, size=10)
    _, info = env.reset(seed=4)
    answer = info["task"]["answer"]
    observation, reward, terminated, truncated, step_info = env.step(
        f"Thinking done. <answer>{answer}</answer>"
    )
    assert terminated and not truncated and observation == ()
    assert step_info["reward_components"] == {"correct": 1.0, "format": 1.0}
    assert reward == pytest.approx(1.1)
    env.reset(seed=4)
    _, reward, *_, step_info = env.step("<answer>not the answer</answer>")
    assert step_info["reward_components"] == {"correct": 0.0, "format": 1.0}


def test_reasoning_gym_untagged_reply_is_scored_whole_without_format_credit():
    env = ReasoningGymEnv(dataset="basic_arithmetic", size=10, dataset_kwargs={"max_terms": 3})
    _, info = env.reset(seed=1)
    *_, step_info = env.step(info["task"]["answer"])
    assert step_info["reward_components"] == {"correct": 1.0, "format": 0.0}
    assert extract_answer("<think><answer>1</answer></think> <answer> 2 </answer>") == ("2", True)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"dataset": "basic_arithmetc"}, "did you mean"),
        ({"dataset": "basic_arithmetic", "dataset_kwargs": {"bogus": 1}}, "bogus"),
    ],
)
def test_reasoning_gym_bad_config_is_one_clear_error(kwargs, needle):
    with pytest.raises(EnvConfigError, match=needle) as raised:
        make_env(RG, kwargs)
    assert "\n" not in str(raised.value)


# -- textarena ----------------------------------------------------------------------------


def test_textarena_passes_gymnasium_env_checker():
    check_env(make_env(TA, {"game": "GuessTheNumber-v0"}), skip_render_check=True)


def _binary_search(env: TextArenaEnv, seed: int) -> tuple[float, dict]:
    observation, _ = env.reset(seed=seed)
    low, high = 1, 20
    while True:
        guess = (low + high) // 2
        observation, reward, terminated, truncated, info = env.step(f"My guess: [{guess}]")
        if terminated or truncated:
            return reward, info
        if "higher" in observation[0]["content"]:
            low = guess + 1
        else:
            high = guess - 1


def test_textarena_scripted_player_wins_and_garbage_loses():
    env = TextArenaEnv(game="GuessTheNumber-v0")
    for seed in range(3):
        reward, info = _binary_search(env, seed)
        assert reward == 1.0 and info["reward_components"] == {"game": 1.0}
    env.reset(seed=0)
    garbage = [env.step("no idea") for _ in range(2)]
    assert garbage[-1][2] and garbage[-1][1] < 1.0
    assert "invalid" in garbage[0][0][0]["content"].lower()


def test_textarena_tower_of_hanoi_solution_wins():
    env = TextArenaEnv(game="TowerOfHanoi-v0")
    observation, _ = env.reset(seed=0)
    assert "Tower" in observation[-1]["content"]
    moves = ["A C", "A B", "C B", "A C", "B A", "B C", "A C"]
    results = [env.step(f"[{move}]") for move in moves]
    assert results[-1][1:3] == (1.0, True)
    assert not any(r[2] for r in results[:-1])


def test_textarena_same_seed_same_game_and_global_rng_untouched():
    env = TextArenaEnv(game="GuessTheNumber-v0")
    random.seed(1234)
    expected = random.Random(1234).random()
    first = [env.reset(seed=9)[0], env.step("[10]")[0]]
    again = [env.reset(seed=9)[0], env.step("[10]")[0]]
    assert first == again
    assert random.random() == expected


def test_textarena_truncates_at_max_turns():
    env = TextArenaEnv(game="GuessTheNumber-v0", max_turns=2)
    env.reset(seed=0)
    results = [env.step(f"[{n}]") for n in (1, 2)]
    if results[0][2] or results[1][2]:
        pytest.skip("seed 0 hides 1 or 2")
    assert results[-1][3] and results[-1][1] == 0.0
    assert results[-1][4]["reward_components"] == {"game": 0.0}


@pytest.mark.parametrize(
    "game, needle",
    [
        ("Wordle-v0", "network"),  # nltk downloads at import
        ("TicTacToe-v0", "single-player"),
        ("GuessTheNumbr-v0", "did you mean"),
    ],
)
def test_textarena_unusable_games_are_one_clear_error(game, needle):
    with pytest.raises(EnvConfigError, match=needle) as raised:
        make_env(TA, {"game": game})
    assert "\n" not in str(raised.value)
    assert "textarena.envs.Wordle.env" not in sys.modules  # refused before import


def test_textarena_actions_are_bracketed_like_textarena_does():
    assert format_action("5") == "[5]"
    assert format_action("<think>[1]?</think> I pick [7]") == "I pick [7]"
