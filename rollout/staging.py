"""The object-store hop of a weight update: a snapshot written on another node
arrives as its bytes through Ray's object store and is staged into this node's
shared memory, where the asyncrl_shm backend (rollout.transport) loads it as it
loads a local snapshot.

Staging runs before the engine pauses, so generation stands still only for the
load, as on the learner's node; the fetch is reported as its own hop
(`sync/object_store_bytes`, `sync/object_store_s`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from core.records import SyncResult, Transfer
from core.shm import DEFAULT_ROOT, WeightSnapshot, stage_snapshot
from core.transports import OBJECT_STORE

STAGING_DIR = "asyncrl-staged"


class MissingPayload(RuntimeError):
    """A worker must fetch a version through the object store but was sent no bytes."""


async def fetch(
    snapshot: WeightSnapshot, payload: list[Any] | None, worker_id: str, node_id: str
) -> tuple[WeightSnapshot, Transfer]:
    """Fetch `payload` (one object ref to the snapshot's bytes, in a list so that Ray
    hands the ref over instead of resolving it before the call) and stage it here."""
    if not payload:
        raise MissingPayload(
            f"{worker_id}: weights v{snapshot.version} were written on node "
            f"{snapshot.node_id[:8]}, not this one ({node_id[:8]}), and no object-store "
            "copy was sent"
        )
    started = time.perf_counter()
    data = await payload[0]
    path = Path(DEFAULT_ROOT) / STAGING_DIR / node_id[:12] / _name(worker_id, snapshot)
    staged = stage_snapshot(snapshot, data, path, node_id)
    return staged, Transfer(OBJECT_STORE, snapshot.total_bytes, time.perf_counter() - started)


def through_object_store(sync: SyncResult, fetched: Transfer) -> SyncResult:
    """`sync` (the load from the staged file) with the object-store hop in front."""
    return dataclasses.replace(
        sync, transport=f"{OBJECT_STORE}+{sync.transport}", transfers=(fetched, *sync.transfers)
    )


def _name(worker_id: str, snapshot: WeightSnapshot) -> str:
    return f"{worker_id}-{os.getpid()}-v{snapshot.version}.bin"
