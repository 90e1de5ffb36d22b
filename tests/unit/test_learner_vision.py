"""learner.vision on the tiny Idefics3 policy (bootstrap.tiny_vl, not warmed up): the
learner's merge of image features equals Transformers' own where the two can agree,
leaves an image token the policy generated as text (as vLLM does), and refuses tokens
that are not the engine's expansion of the images."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from core.images import encode_png
from envs.shapes import Shape, render
from learner.vision import PixelInputs, embeds_with_images, image_token_id, load_policy
from tests.tiny_models import VL_IMAGE_SEQ_LEN, VL_TINY


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> str:
    from bootstrap.tiny_vl import build_tiny_vl_policy

    target = tmp_path_factory.mktemp("vl")
    build_tiny_vl_policy(dataclasses.replace(VL_TINY, demos=40, warmup_steps=0), target)
    return str(target)


def _sample(model, extra: list[int]) -> torch.Tensor:
    """<fake><global-img><image>*16<fake> then `extra` tokens, as the engine expands one image."""
    image = image_token_id(model.config)
    return torch.tensor([[5, 6] + [image] * VL_IMAGE_SEQ_LEN + [7] + extra])


def test_the_merge_is_transformers_own_when_nothing_generated_is_an_image_token(policy):
    model = load_policy(policy, torch.float32).eval()
    png = encode_png(render([Shape("circle", "red", 40, 40, 20)], 112))
    pixels = PixelInputs(policy)([[png]])
    ids = _sample(model, [8, 9])
    generated = torch.zeros_like(ids, dtype=torch.bool)
    generated[0, -2:] = True
    with torch.no_grad():
        ours = model(inputs_embeds=embeds_with_images(model, ids, generated, pixels)).logits
        theirs = model(input_ids=ids, **pixels).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_a_generated_image_token_stays_text_and_a_miscount_is_refused(policy):
    model = load_policy(policy, torch.float32).eval()
    png = encode_png(render([Shape("square", "blue", 60, 60, 16)], 112))
    pixels = PixelInputs(policy)([[png]])
    image = image_token_id(model.config)
    ids = _sample(model, [8, image, 9])
    generated = torch.zeros_like(ids, dtype=torch.bool)
    generated[0, -3:] = True
    with torch.no_grad():
        embeds = embeds_with_images(model, ids, generated, pixels)
        text = model.get_input_embeddings()(ids)
    assert torch.equal(embeds[0, -2], text[0, -2])  # the generated one: its text embedding
    assert not torch.equal(embeds[0, 2], text[0, 2])  # the prompt's: an image feature
    with pytest.raises(RuntimeError):  # Transformers merges every image token id
        model(input_ids=ids, **pixels)
    with pytest.raises(ValueError, match="17 image-token positions .* for 16 image features"):
        embeds_with_images(model, ids, torch.zeros_like(generated), pixels)


def test_a_micro_batch_mixing_image_and_text_samples_is_refused(policy):
    png = encode_png(render([Shape("circle", "green", 40, 40, 20)], 112))
    with pytest.raises(ValueError, match="mixes samples with and without images"):
        PixelInputs(policy)([[png], []])


def test_a_micro_batchs_images_are_processed_once_until_the_step_forgets_them(policy):
    """The policy's, the reference's and MIS's forwards of one micro-batch share its
    pixel tensors; another image list, or the next step, is processed again."""
    pixels = PixelInputs(policy)
    calls: list[int] = []
    processor = pixels.processor

    def counting(*args, **kwargs):
        calls.append(1)
        return processor(*args, **kwargs)

    pixels.processor = counting
    png = encode_png(render([Shape("circle", "red", 40, 40, 20)], 112))
    images = [[png]]
    first = pixels(images)
    assert pixels(images) is first and len(calls) == 1
    pixels([[png]])  # an equal list of another micro-batch: its own tensors
    assert len(calls) == 2
    pixels.forget()
    again = pixels(images)
    assert len(calls) == 3 and torch.equal(again["pixel_values"], first["pixel_values"])
