"""Weight transfer into vLLM through its own RL API, over shared memory.

vLLM 0.32 drives weight updates through a registered `WeightTransferEngine`
(`init_weight_transfer_engine`, `start_weight_update`, `update_weights`,
`finish_weight_update`). Its built-in engines need CUDA (NCCL, CUDA IPC), so
this module registers `asyncrl_shm`: the update info names a `WeightSnapshot`
file in /dev/shm and the worker loads it with the model's own `load_weights`,
inside vLLM's layerwise-reload lifecycle, and records the version and the
checksum of each tensor as the model then holds it (rollout.loaded_weights), which
the engine asks for through WorkerInspection to confirm the update.

rollout.vllm_plugin registers it in every vLLM process (engine core and
workers), so each knows the backend by name.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

BACKEND = "asyncrl_shm"
TRANSPORT = "shm"
"""The transport's name in SyncResult and the sync/ metrics (rollout.weight_transport's
name for it)."""


def register_backend() -> None:
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(
            BACKEND, "rollout.transport", "SharedMemoryWeightTransferEngine"
        )


def snapshot_update_info(snapshot: Any) -> dict[str, Any]:
    """The `update_info` dict for one snapshot (plain data: it crosses processes)."""
    return {
        "version": snapshot.version,
        "path": snapshot.path,
        "total_bytes": snapshot.total_bytes,
        "entries": [
            [e.name, e.dtype, list(e.shape), e.offset, e.nbytes, e.served_dtype]
            for e in snapshot.entries
        ],
    }


def _info_classes() -> tuple[type, type]:
    """The init and update infos of the asyncrl_shm backend (vLLM's base classes)."""
    from vllm.distributed.weight_transfer.base import (
        WeightTransferInitInfo,
        WeightTransferUpdateInfo,
    )

    from core.shm import TensorEntry, WeightSnapshot

    @dataclass
    class SharedMemoryInitInfo(WeightTransferInitInfo):
        """No rendezvous: snapshots are files."""

    @dataclass
    class SharedMemoryUpdateInfo(WeightTransferUpdateInfo):
        version: int
        path: str
        total_bytes: int
        entries: list[list[Any]]

        def snapshot(self) -> WeightSnapshot:
            entries = tuple(
                TensorEntry(name, dtype, tuple(shape), offset, nbytes, served_dtype=served)
                for name, dtype, shape, offset, nbytes, served in self.entries
            )
            return WeightSnapshot(self.version, self.path, entries, self.total_bytes)

    return SharedMemoryInitInfo, SharedMemoryUpdateInfo


def _confirmation(version: int | None, checksums: Any) -> dict[str, Any]:
    """What an update leaves for WorkerInspection to report: the version and the
    checksums of what the model holds (rollout.loaded_weights.LoadedChecksums)."""
    return {"version": version, "checksums": checksums.result(), "seconds": checksums.seconds}


def _engine_class() -> type:
    from vllm.distributed.weight_transfer.base import WeightTransferEngine
    from vllm.model_executor.model_loader.reload import (
        finalize_layerwise_reload,
        initialize_layerwise_reload,
    )

    from core.shm import read_snapshot
    from rollout.loaded_weights import LoadedChecksums

    SharedMemoryInitInfo, SharedMemoryUpdateInfo = _info_classes()  # noqa: N806 - classes

    class SharedMemoryWeightTransferEngine(WeightTransferEngine):
        init_info_cls = SharedMemoryInitInfo
        update_info_cls = SharedMemoryUpdateInfo
        supports_draft_weight_update = True

        def init_transfer_engine(self, init_info: Any) -> None:
            return None

        confirmation: dict[str, Any] | None = None
        """The last update's version and what the model holds for each snapshot
        tensor (rollout.loaded_weights), for WorkerInspection to report."""
        _checksums: LoadedChecksums | None = None
        _version: int | None = None

        def start_weight_update(self) -> None:
            self._checksums, self._version, self.confirmation = None, None, None
            initialize_layerwise_reload(self.model)

        def finish_weight_update(self) -> None:
            with self._checksums.capturing() if self._checksums else nullcontext():
                finalize_layerwise_reload(self.model, self.model_config)
            if self._checksums is not None:
                self.confirmation = _confirmation(self._version, self._checksums)

        def update_weights(self, update_info: dict[str, Any]) -> None:
            # The base class synchronises an accelerator; a CPU engine has none.
            self.receive_weights(self.parse_update_info(update_info))
            if self.device.type != "cpu":
                import torch

                torch.accelerator.synchronize()

        def receive_weights(self, update_info: Any) -> None:
            snapshot = update_info.snapshot()
            tensors = [(e.name, e.held_dtype, e.shape) for e in snapshot.entries]
            self._checksums = LoadedChecksums(self.model, tensors)
            self._version = snapshot.version
            with self._checksums.capturing():
                self.model.load_weights(weights=read_snapshot(snapshot))

        def shutdown(self) -> None:
            return None

    return SharedMemoryWeightTransferEngine


def __getattr__(name: str) -> Any:
    # vLLM's factory imports the class lazily by name; build it on first use so
    # importing this module never imports vLLM.
    if name == "SharedMemoryWeightTransferEngine":
        cls = _engine_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
