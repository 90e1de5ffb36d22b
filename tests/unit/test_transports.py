"""core.transports: which hop carries a snapshot to a worker, and the refusal of a
shared-memory read across nodes."""

from __future__ import annotations

import pytest

from core.transports import OBJECT_STORE, SHM, CrossNodeRead, hop


@pytest.mark.parametrize(
    ("setting", "written_on", "reader_on", "expected"),
    [
        ("auto", "n1", "n1", SHM),
        ("auto", "n1", "n2", OBJECT_STORE),
        ("auto", "", "n2", SHM),  # written outside Ray: the reader's own node
        ("shm", "n1", "n1", SHM),
        ("object_store", "n1", "n1", OBJECT_STORE),
        ("object_store", "n1", "n2", OBJECT_STORE),
    ],
)
def test_the_hop_follows_the_setting_and_the_nodes(setting, written_on, reader_on, expected):
    assert hop(setting, written_on, reader_on) == expected


def test_shm_across_nodes_is_refused_in_one_line_saying_what_to_use():
    with pytest.raises(CrossNodeRead) as refused:
        hop("shm", "node-one-id", "node-two-id")
    message = str(refused.value)
    assert "\n" not in message and "rollout.weight_transport=auto" in message
    assert "node-two" in message and "node-one" in message
