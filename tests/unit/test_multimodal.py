"""The multimodal path without an engine: the codec renders image placeholders and
collects images in order, and the agent loop sends compact ids plus images while
recording the ids as the engine expanded them (a fake engine expands like vLLM).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from core.chat import QWEN_STYLE_TEMPLATE, ChatCodec, ChatTemplateError, qwen_style_template
from core.images import decode_png, encode_png
from core.types import Status
from envs import make_env
from envs.calculator import scripted_episode
from envs.shapes import Shape, ShapesEnv, render, scripted_reply
from rollout.agent import EpisodeSpec, Served, run_episode
from rollout.engine import Generation

QWEN_VL_TOKENS = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]
PER_IMAGE = 5
"""Tokens the fake engine expands each image token into."""


@pytest.fixture(scope="module")
def vl_tokenizer():
    """A small BPE tokenizer with Qwen-VL's vision tokens and the Qwen-style template."""
    from bootstrap.build import build_tokenizer, corpus_template

    env = make_env("asyncrl/Shapes-v0")
    template = corpus_template()
    corpus = []
    for seed in range(200):
        observation, info = env.reset(seed=seed)
        reply = {"role": "assistant", "content": scripted_reply(info["task"])}
        corpus.append(template.render(messages=[*observation, reply]))
    tokenizer = build_tokenizer(corpus, 400)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_VL_TOKENS})
    return tokenizer


@pytest.fixture(scope="module")
def vl_codec(vl_tokenizer) -> ChatCodec:
    return ChatCodec(vl_tokenizer)


def _picture(colour: str, kind: str = "circle"):
    return render([Shape(kind, colour, 30, 30, 12)], 56)


def _user(*parts) -> dict:
    """A user message of text (str) and image parts, in order."""
    content = [
        {"type": "text", "text": p} if isinstance(p, str) else {"type": "image", "image": p}
        for p in parts
    ]
    return {"role": "user", "content": content}


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# -- the codec -------------------------------------------------------------------------


def test_prompt_has_one_placeholder_per_image_in_order(vl_codec, vl_tokenizer):
    red, blue = _picture("red"), _picture("blue", "square")
    messages = [{"role": "system", "content": "Look."}, _user(red, "and", blue, "which is red?")]
    rendered = vl_codec.prompt(messages)
    start, pad, end = vl_tokenizer.convert_tokens_to_ids(QWEN_VL_TOKENS)
    assert rendered.ids.count(pad) == 2
    first = rendered.ids.index(pad)
    second = rendered.ids.index(pad, first + 1)
    assert rendered.ids[first - 1 : first + 2] == [start, pad, end]
    assert rendered.ids[second - 1 : second + 2] == [start, pad, end]
    between = vl_tokenizer.decode(rendered.ids[first + 2 : second - 1])
    assert between == "and"
    assert [_pixels(decode_png(png)).tolist() for png in rendered.images] == [
        _pixels(red).tolist(),
        _pixels(blue).tolist(),
    ]
    assert rendered.images[0] == encode_png(red)


def test_observation_delta_carries_its_own_images(vl_codec, vl_tokenizer):
    green = _picture("green")
    rendered = vl_codec.observation([_user("Look again:", green)])
    pad = vl_tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert rendered.ids.count(pad) == 1 and rendered.images == (encode_png(green),)
    assert rendered.ids == vl_codec.observation_ids([_user("Look again:", green)])


def test_text_only_rendering_is_unchanged(codec, calculator_env):
    for seed in range(20):
        dialogue = scripted_episode(calculator_env, seed, use_tool=True)
        prompt = codec.prompt(dialogue[:2])
        assert prompt.ids == codec.prompt_ids(dialogue[:2]) and prompt.images == ()
        delta = codec.observation(dialogue[3:4])
        assert delta.ids == codec.observation_ids(dialogue[3:4]) and delta.images == ()
    # a text part renders exactly as the same string content
    plain = [{"role": "user", "content": "What is 2 + 2?"}]
    parted = [_user("What is 2 + 2?")]
    assert codec.render(plain, True) == codec.render(parted, True)


def test_images_need_a_model_with_an_image_token(codec):
    with pytest.raises(ChatTemplateError, match="vision-language model"):
        codec.prompt([_user(_picture("red"), "Which colour?")])


def test_a_template_that_drops_images_is_refused(vl_tokenizer):
    import copy

    blind = copy.deepcopy(vl_tokenizer)
    blind.chat_template = qwen_style_template("")
    with pytest.raises(ChatTemplateError, match="0 image tokens for 1 images"):
        ChatCodec(blind).prompt([_user(_picture("red"), "Which colour?")])
    assert vl_tokenizer.chat_template == QWEN_STYLE_TEMPLATE


# -- the agent loop ---------------------------------------------------------------------


class ExpandingEngine:
    """Answers like a scripted assistant and, like vLLM, expands the first image
    token of each sent image into `per_image` copies, reporting the prompt it ran."""

    def __init__(self, codec, env, per_image=(PER_IMAGE,)):
        self.codec, self.env, self.per_image = codec, env, list(per_image)
        self.requests: list[tuple[list[int], list[bytes] | None]] = []
        self.ran: list[list[int]] = []
        self.replies: list[list[int]] = []

    async def __call__(self, prompt_ids, spec, images=None):
        self.requests.append((list(prompt_ids), images))
        n = self.per_image.pop(0) if len(self.per_image) > 1 else self.per_image[0]
        expanded, left = [], len(images or [])
        for token in prompt_ids:
            if token == self.codec.image_token_id and left:
                expanded.extend([token] * n)
                left -= 1
            else:
                expanded.append(token)
        ids = self.codec.encode(scripted_reply(self.env.task)) + list(spec.stop_token_ids)
        self.ran.append(expanded)
        self.replies.append(ids)
        generation = Generation(ids, [-0.5] * len(ids), [0] * len(ids), "stop", len(expanded))
        generation.prompt_ids = expanded if images else None
        return Served(generation, "w0")


class SecondLookEnv(ShapesEnv):
    """Replies to the first answer with a second image (a user turn); scores the second."""

    async def astep(self, action):
        if self.stats.turns == 0:
            self.stats.turns += 1
            self.messages.append({"role": "assistant", "content": action})
            reply = _user("Look again:", _picture("yellow", "triangle"))
            self.messages.append(reply)
            return (reply,), 0.0, False, False, self._info()
        return await super().astep(action)


def _episode(codec, env, engine):
    spec = EpisodeSpec(
        "t0", "g0", "shapes", task_seed=4, max_tokens_per_turn=32, max_model_len=1024
    )
    return asyncio.run(run_episode(env, codec, engine, spec))


def test_engine_gets_compact_ids_and_images_trajectory_gets_expanded_ids(vl_codec):
    env = make_env("asyncrl/Shapes-v0")
    engine = ExpandingEngine(vl_codec, env)
    traj = _episode(vl_codec, env, engine)
    assert traj.status == Status.COMPLETED and traj.reward == pytest.approx(1.1)
    ((sent, images),) = engine.requests
    observation, _ = env.reset(seed=4)
    assert sent == vl_codec.prompt(list(observation)).ids  # one image token, as vLLM wants
    assert images == [encode_png(observation[1]["content"][0]["image"])] == traj.images
    assert traj.tokens == engine.ran[0] + engine.replies[0]
    assert traj.prompt_length == len(sent) + PER_IMAGE - 1 == len(engine.ran[0])
    assert traj.tokens.count(vl_codec.image_token_id) == PER_IMAGE
    assert traj.loss_mask == [0] * traj.prompt_length + [1] * len(engine.replies[0])


def test_an_image_in_an_observation_is_recorded_as_the_engine_expanded_it(vl_codec):
    env = SecondLookEnv(max_turns=2)
    engine = ExpandingEngine(vl_codec, env)
    traj = _episode(vl_codec, env, engine)
    assert traj.status == Status.COMPLETED and len(traj.turns) == 2
    (first, first_images), (second, second_images) = engine.requests
    delta = vl_codec.observation([env.messages[3]])
    assert second == first + engine.replies[0] + delta.ids
    assert len(first_images) == 1 and second_images == first_images + list(delta.images)
    assert traj.images == second_images
    assert traj.tokens == engine.ran[1] + engine.replies[1]
    assert traj.turns[0].num_observation == len(delta.ids) + PER_IMAGE - 1
    assert traj.turns[1].start == len(engine.ran[1])
    generated = [t for t, m in zip(traj.tokens, traj.loss_mask, strict=True) if m]
    assert generated == engine.replies[0] + engine.replies[1]


def test_an_engine_prompt_that_breaks_the_record_fails_the_episode(vl_codec):
    env = SecondLookEnv(max_turns=2)
    engine = ExpandingEngine(vl_codec, env, per_image=(PER_IMAGE, PER_IMAGE + 1))
    traj = _episode(vl_codec, env, engine)
    assert traj.status == Status.FAILED and traj.reward == 0.0
    assert "is not the" in traj.failure and len(traj.turns) == 1
