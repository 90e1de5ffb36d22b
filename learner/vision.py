"""Vision-language policies on the learner: loading one, and a micro-batch's images
as the model's pixel inputs.

A trajectory's tokens are already expanded as the engine expanded them (vLLM puts
one token per image feature where the prompt had the image's placeholder, as the
model's own processor does: tests/integration/test_multimodal.py shows the two
token-exact). What the learner adds is the pixels: each sample's PNG bytes
(`Trajectory.images`, the bytes the engine decoded) decoded again and run through
the checkpoint's image processor, whose tensors (Idefics3: `pixel_values` [B, images,
3, H, W], zero-padded where a sample has fewer images, and `pixel_attention_mask`) give
the image features (the model's `get_image_features`), which replace the embeddings
of the image tokens the engine expanded, in order. Only those: a policy may *generate*
its image token, which vLLM embeds as text (it merges features at the placeholder
ranges of the prompt it processed, never at generated tokens), so the learner merges
at image tokens that were not generated and leaves generated ones as text, where
Transformers' own merge (every image token id, modeling_idefics3.py `inputs_merger`)
would fail on the count or misplace the features.
"""

from __future__ import annotations

from typing import Any

import torch

from core.images import decode_png


def is_vision_language(config: Any) -> bool:
    """Whether a Transformers config describes a vision-language model."""
    return getattr(config, "vision_config", None) is not None


def load_policy(model_path: str, dtype: torch.dtype) -> torch.nn.Module:
    """The checkpoint's model with its LM head: a vision-language model whole (vision
    tower included), any other as a causal LM."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(model_path)
    kind = AutoModelForImageTextToText if is_vision_language(config) else AutoModelForCausalLM
    model = kind.from_pretrained(model_path, dtype=dtype)
    model.config.use_cache = False
    return model


class PixelInputs:
    """The checkpoint's image processor, turning each sample's PNG bytes into the
    model's pixel tensors. A step forwards a micro-batch up to three times (MIS's
    counting pass, the reference's, the policy's): the tensors of a micro-batch's
    image list are kept until `forget` (the end of the step), so its PNGs are
    decoded and processed once."""

    def __init__(self, model_path: str):
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_path).image_processor
        self._kept: dict[int, tuple[list[list[bytes]], dict[str, torch.Tensor]]] = {}

    def __call__(self, images: list[list[bytes]]) -> dict[str, torch.Tensor]:
        kept = self._kept.get(id(images))
        if kept is not None and kept[0] is images:
            return kept[1]
        if any(not sample for sample in images):
            raise ValueError(
                "a micro-batch mixes samples with and without images; the learner "
                "cannot give the processor an image-less sample"
            )
        decoded = [[decode_png(png) for png in sample] for sample in images]
        out = self.processor(images=decoded, return_tensors="pt")
        tensors = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
        self._kept[id(images)] = (images, tensors)  # the list is held: its id stays its own
        return tensors

    def forget(self) -> None:
        """Drop the kept tensors (the step that used them is over)."""
        self._kept.clear()


def image_token_id(config: Any) -> int:
    """The id of the token each image feature sits on."""
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"{type(config).__name__} names no image token (image_token_id)")


def embeds_with_images(
    model: Any,
    input_ids: torch.Tensor,
    generated: torch.Tensor,
    pixels: dict[str, torch.Tensor],
) -> torch.Tensor:
    """[B, T, H] the token embeddings of `input_ids` with the images' features on the
    image tokens that were not `generated` ([B, T] bool), in order (module docstring)."""
    module = getattr(model, "module", model)  # a DeepSpeed engine's model
    embeds = module.get_input_embeddings()(input_ids)
    features = module.get_image_features(**pixels).pooler_output
    features = features.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
    slots = (input_ids == image_token_id(module.config)) & ~generated
    if int(slots.sum()) != features.shape[0]:
        raise ValueError(
            f"{int(slots.sum())} image-token positions in the samples' prompts for "
            f"{features.shape[0]} image features: the trajectories' tokens are not the "
            "engine's expansion of their images"
        )
    return embeds.masked_scatter(slots.unsqueeze(-1), features)


def pixel_inputs_for(model_path: str, model: torch.nn.Module) -> PixelInputs | None:
    """PixelInputs for a vision-language `model`, None for a text-only one."""
    return PixelInputs(model_path) if is_vision_language(model.config) else None
