"""Which weight transport carries a snapshot from learner rank 0 to one rollout
worker, from the config's `rollout.weight_transport` and the two nodes.

A snapshot is a file in the shared memory of the node that wrote it
(core.shm.WeightSnapshot.node_id): a worker on that node reads it in place (`shm`);
a worker on any other node must not open it, since /dev/shm is not shared between
machines, and gets the snapshot's bytes through Ray's object store instead, staged
into its own node's shared memory (`object_store`, rollout.staging). Pure: the
fleet asks which workers need the bytes, the worker which hop it takes, and both
get the same answer.
"""

from __future__ import annotations

from core.choices import WeightTransport

OBJECT_STORE = WeightTransport.object_store.value
SHM = WeightTransport.shm.value


class CrossNodeRead(RuntimeError):
    """A worker was told to read a shared-memory snapshot written on another node."""


def hop(setting: str, written_on: str, reader_on: str) -> str:
    """The transport a worker on node `reader_on` loads a snapshot written on
    `written_on` by (`shm` or `object_store`); raises CrossNodeRead when `setting`
    forces shm across nodes. An empty `written_on` (a snapshot written outside Ray)
    counts as the reader's own node."""
    same_node = written_on in ("", reader_on)
    if setting == WeightTransport.object_store:
        return OBJECT_STORE
    if same_node:
        return SHM
    if setting == WeightTransport.shm:
        raise CrossNodeRead(
            f"rollout.weight_transport=shm, but this worker is on node {reader_on[:8]} and "
            f"the weights were written to shared memory on node {written_on[:8]}: use "
            "rollout.weight_transport=auto (or object_store) for workers on other nodes"
        )
    return OBJECT_STORE
