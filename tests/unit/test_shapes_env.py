"""Shapes-v0: gymnasium compliance, determinism, and answers that match the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import make_env
from envs.shapes import BACKGROUND, COLOURS, GRID, ShapesEnv, scripted_reply


def _image(observation):
    user = observation[-1]
    assert user["role"] == "user" and [p["type"] for p in user["content"]] == ["image", "text"]
    return user["content"][0]["image"]


def _read_scene(image) -> list[tuple[str, str, int]]:
    """(colour, kind, pixels) of each shape, read off the image alone: one shape per
    grid cell, its colour exact (no anti-aliasing), its kind from how much of its
    bounding box it fills (square 1, circle ~0.79, triangle ~0.5)."""
    pixels = np.asarray(image)
    cell = pixels.shape[0] // GRID
    shapes = []
    for row in range(GRID):
        for col in range(GRID):
            block = pixels[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell]
            ink = np.any(block != BACKGROUND, axis=-1)
            if not ink.any():
                continue
            colours = {tuple(int(v) for v in rgb) for rgb in block[ink]}
            assert len(colours) == 1, "one flat colour per shape"
            (ink_rgb,) = colours
            colour = next(name for name, rgb in COLOURS.items() if rgb == ink_rgb)
            ys, xs = np.nonzero(ink)
            fill = ink.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
            kind = "square" if fill > 0.95 else "circle" if fill > 0.65 else "triangle"
            shapes.append((colour, kind, int(ink.sum())))
    return shapes


def _answer_from_pixels(question: str, scene: list[tuple[str, str, int]]) -> str:
    if question.startswith("What colour is the largest"):
        return max(scene, key=lambda shape: shape[2])[0]
    word = question.split()[2]  # "How many red shapes ..." / "How many circles ..."
    if word in COLOURS:
        return str(sum(colour == word for colour, _, _ in scene))
    return str(sum(f"{kind}s" == word for _, kind, _ in scene))


def test_passes_gymnasium_env_checker():
    check_env(make_env("asyncrl/Shapes-v0"), skip_render_check=True)


def test_same_seed_same_image_and_task():
    env = make_env("asyncrl/Shapes-v0")
    first, info = env.reset(seed=5)
    again, info_again = env.reset(seed=5)
    assert info["task"] == info_again["task"]
    assert np.array_equal(np.asarray(_image(first)), np.asarray(_image(again)))
    other, _ = env.reset(seed=6)
    assert not np.array_equal(np.asarray(_image(first)), np.asarray(_image(other)))


def test_every_answer_is_what_the_pixels_show():
    env = make_env("asyncrl/Shapes-v0")
    kinds = set()
    for seed in range(150):
        observation, info = env.reset(seed=seed)
        task = info["task"]
        scene = _read_scene(_image(observation))
        assert len(scene) == len(task["shapes"])
        assert sorted(a for _, _, a in scene) == sorted(s["area"] for s in task["shapes"])
        assert _answer_from_pixels(task["question"], scene) == task["answer"], seed
        kinds.add(task["question_kind"])
    assert kinds == {"count_colour", "count_kind", "largest_colour"}


def test_right_answer_scores_full_reward_and_wrong_one_only_format():
    env = make_env("asyncrl/Shapes-v0")
    _, info = env.reset(seed=2)
    _, reward, terminated, _, step_info = env.step(scripted_reply(info["task"]))
    assert terminated and reward == pytest.approx(1.1)
    assert step_info["reward_components"] == {"correct": 1.0, "format": 1.0}
    env.reset(seed=2)
    _, reward, _, _, step_info = env.step("<answer>purple</answer>")
    assert step_info["reward_components"] == {"correct": 0.0, "format": 1.0}


def test_observation_space_holds_images_but_not_malformed_parts():
    env = make_env("asyncrl/Shapes-v0")
    observation, _ = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    broken = dict(observation[-1], content=[{"type": "image", "image": "not an image"}])
    assert not env.observation_space.contains((observation[0], broken))
    assert not make_env("asyncrl/Calculator-v0").observation_space.contains(observation)


@pytest.mark.parametrize(
    "kwargs",
    [{"min_shapes": 0}, {"max_shapes": 10}, {"image_size": 10}, {"questions": ["colour_of_sky"]}],
)
def test_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        ShapesEnv(**kwargs)


def test_launch_refuses_an_image_env_for_a_text_only_policy_in_one_line(tmp_path):
    """`env=shapes` with a policy that cannot see stops before anything starts; with a
    vision-language checkpoint (a config with `vision_config`) it goes on."""
    import json

    from envs import EnvConfigError
    from rollout.launch import check_trainable

    text, vision = tmp_path / "text", tmp_path / "vision"
    for directory, config in ((text, {}), (vision, {"vision_config": {}})):
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps({"model_type": "x", **config}))
    check_trainable(make_env("asyncrl/Calculator-v0"), str(text))
    check_trainable(make_env("asyncrl/Shapes-v0"), str(vision))
    with pytest.raises(EnvConfigError, match="Shapes-v0 shows images.*model=tiny_vl"):
        check_trainable(make_env("asyncrl/Shapes-v0"), str(text))
