"""Weight digests: how the learner and each rollout worker agree, after an update,
that a worker holds exactly the weights the learner published.

A tensor's checksum is CRC-32 over its bytes in row-major order, in its dtype
(zlib: ~4 GB/s here, and any change confined to 32 consecutive bits, so any one
changed fp32/bf16 element, is always detected). A weight version's digest is
SHA-256 over its tensors' names, dtypes, shapes and checksums in the snapshot's
order, so it is order-defined and names a tensor set, not only a byte string.
The layout a rollout engine keeps its parameters in (fused projections, padded
vocabularies) is its side's business: it digests each learner tensor's slice of
its parameters (rollout.loaded_weights). torch is imported only by callers.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DIGEST_CHARS = 16
"""Hex characters of the combined digest that are reported (64 bits)."""


def tensor_checksum(tensor: torch.Tensor) -> int:
    """CRC-32 of the tensor's elements in row-major order (a copy only when it is
    not contiguous or not on the CPU)."""
    import torch

    flat = tensor.detach().reshape(-1)
    if flat.device.type != "cpu" or not flat.is_contiguous():
        flat = flat.to("cpu").contiguous()
    return zlib.crc32(flat.view(torch.uint8).numpy())


def bytes_checksum(data: memoryview | bytes) -> int:
    """The same checksum over raw bytes (a tensor's bytes as written to a snapshot)."""
    return zlib.crc32(data)


def combine(tensors: Iterable[tuple[str, str, tuple[int, ...], int | None]]) -> str:
    """One digest over (name, dtype, shape, checksum) in the given order."""
    sha = hashlib.sha256()
    for name, dtype, shape, checksum in tensors:
        sha.update(f"{name}|{dtype}|{','.join(map(str, shape))}|{checksum}\n".encode())
    return sha.hexdigest()[:DIGEST_CHARS]
