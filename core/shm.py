"""The shared-memory weight snapshot: the wire format from learner to rollout.

The learner writes every tensor of a policy version into one flat file under
/dev/shm (64-byte aligned), and sends only a `WeightSnapshot` descriptor through
Ray. Each rollout engine maps the file and loads the tensors without another
copy through the object store. Each entry carries the checksum of the tensor as
the learner held it (core.digest), taken before the file is written, so a worker
can confirm what it loaded; where the engines serve a narrower dtype than the
learner writes (bf16 engines, fp32 learner), also the checksum of the tensor cast
to that dtype, which is what such an engine holds. Both sides import this module; torch is imported
inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.digest import bytes_checksum, combine, tensor_checksum

if TYPE_CHECKING:
    import numpy as np
    import torch

ALIGN = 64
DEFAULT_ROOT = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    checksum: int | None = None
    """core.digest checksum of the tensor's bytes, computed by the writer."""
    served_dtype: str | None = None
    """The engines' dtype, where it is a narrower float than `dtype` (else None)."""
    served_checksum: int | None = None
    """core.digest checksum of the tensor cast to `served_dtype` (round to nearest
    even, as torch casts when an engine copies it into its parameter)."""

    @property
    def held_dtype(self) -> str:
        """The dtype an engine holds this tensor in."""
        return self.served_dtype or self.dtype

    @property
    def held_checksum(self) -> int | None:
        """The checksum an engine holding this tensor exactly reports."""
        return self.served_checksum if self.served_dtype else self.checksum


@dataclass(frozen=True)
class WeightSnapshot:
    """Where version `version`'s weights lie, and how to cut them out."""

    version: int
    path: str
    entries: tuple[TensorEntry, ...]
    total_bytes: int
    node_id: str = ""
    """The Ray node whose shared memory holds `path` ("" when written outside Ray):
    core.transports decides from it whether a worker may read the file in place."""

    @property
    def digest(self) -> str:
        """core.digest.combine over the entries' names, dtypes, shapes, checksums."""
        return combine((e.name, e.dtype, e.shape, e.checksum) for e in self.entries)

    @property
    def held_digest(self) -> str:
        """The digest an engine holding these weights exactly reports (in its dtype)."""
        return combine((e.name, e.held_dtype, e.shape, e.held_checksum) for e in self.entries)


def write_snapshot(
    path: str | Path,
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    version: int,
    served_dtype: str | None = None,
) -> WeightSnapshot:
    """Write tensors (any dtype, on CPU) into one aligned flat file; with
    `served_dtype` (the engines'), record each wider float tensor's checksum in it."""
    import torch

    tensors = [(name, t.detach().contiguous().cpu()) for name, t in named_tensors]
    entries: list[TensorEntry] = []
    offset = 0
    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        entries.append(
            TensorEntry(
                name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), offset, nbytes
            )
        )
        offset += -(-nbytes // ALIGN) * ALIGN
    buffer = torch.zeros(max(offset, 1), dtype=torch.uint8)
    for (_, tensor), entry in zip(tensors, entries, strict=True):
        flat = tensor.reshape(-1).view(torch.uint8) if tensor.numel() else tensor.view(torch.uint8)
        buffer[entry.offset : entry.offset + entry.nbytes] = flat
    raw = buffer.numpy()
    entries = [
        dataclasses.replace(
            e,
            checksum=bytes_checksum(raw[e.offset : e.offset + e.nbytes]),
            **_served(tensor, served_dtype),
        )
        for e, (_, tensor) in zip(entries, tensors, strict=True)
    ]
    _write_whole(Path(path), raw)
    return WeightSnapshot(version, str(path), tuple(entries), offset)


def _served(tensor: torch.Tensor, served_dtype: str | None) -> dict[str, object]:
    """served_dtype and served_checksum for `tensor`, when engines hold it narrower."""
    import torch

    if served_dtype is None or not tensor.is_floating_point():
        return {}
    target = getattr(torch, served_dtype)
    if not target.is_floating_point or target.itemsize >= tensor.element_size():
        return {}
    return {"served_dtype": served_dtype, "served_checksum": tensor_checksum(tensor.to(target))}


def read_snapshot(snapshot: WeightSnapshot) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) views over a private mapping of the snapshot file."""
    import torch

    flat = torch.from_file(
        snapshot.path, shared=False, size=max(snapshot.total_bytes, 1), dtype=torch.uint8
    )
    for entry in snapshot.entries:
        dtype = getattr(torch, entry.dtype)
        raw = flat[entry.offset : entry.offset + entry.nbytes]
        yield entry.name, raw.view(dtype).reshape(entry.shape)


def snapshot_bytes(snapshot: WeightSnapshot) -> np.ndarray:
    """The snapshot file's bytes as a uint8 array over a read-only mapping (what the
    object-store transport ships to other nodes: Ray copies the array's buffer into
    its object store once, without a pickle of the bytes)."""
    import numpy as np

    if snapshot.total_bytes == 0:
        return np.zeros(0, dtype=np.uint8)
    mapped = np.memmap(snapshot.path, dtype=np.uint8, mode="r", shape=(snapshot.total_bytes,))
    return np.asarray(mapped)  # a plain ndarray over the mapping, no copy


def stage_snapshot(
    snapshot: WeightSnapshot, data: np.ndarray, path: str | Path, node_id: str
) -> WeightSnapshot:
    """`data` (a snapshot's bytes, from another node) written to `path` in this node's
    shared memory: the same entries, now readable here."""
    _write_whole(Path(path), data)
    return dataclasses.replace(snapshot, path=str(path), node_id=node_id)


def _write_whole(path: Path, data: np.ndarray) -> None:
    """`data`'s buffer (no bytes copy) to `path`, through a partial file renamed into
    place: readers never see a half-written snapshot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def remove_snapshot(snapshot: WeightSnapshot) -> None:
    Path(snapshot.path).unlink(missing_ok=True)
