"""Images as they cross actors: PNG bytes, encoded once where they enter a trajectory.

An environment puts PIL images in its chat messages (the Hugging Face content-part
style, `{"type": "image", "image": <PIL.Image>}`). The chat codec encodes each
one to PNG as it renders the message; from then on an image is those bytes: the
rollout worker decodes them for vLLM and a learner decodes the same bytes for its
processor, so nothing is re-rendered and both see the same pixels. PNG is lossless
and small (about 1 KB for a 112x112 scene of flat shapes), and bytes pickle
without numpy or torch.

PIL is imported only when an image is encoded or decoded: text-only runs never
load it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

IMAGE_PART = "image"
TEXT_PART = "text"


def is_image(value: Any) -> bool:
    """A PIL image (checked without importing PIL for anything else)."""
    if isinstance(value, bytes | str | int | float | dict | list | tuple | type(None)):
        return False
    from PIL import Image

    return isinstance(value, Image.Image)


def message_images(messages: Sequence[dict[str, Any]]) -> list[Any]:
    """The images of `messages`' content parts, in the order a chat template renders them."""
    images: list[Any] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) or not content:
            continue
        for part in content:
            if part.get("type") == IMAGE_PART:
                images.append(part[IMAGE_PART])
    return images


def encode_png(image: Any) -> bytes:
    """PNG bytes of a PIL image (or the bytes themselves if already encoded)."""
    if isinstance(image, bytes):
        return image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> Any:
    """The PIL image (RGB) of PNG bytes, fully loaded."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
