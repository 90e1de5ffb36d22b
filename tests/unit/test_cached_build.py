"""cached_build: a cache entry is built once, whole, and a half-built one is redone."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.cache import cached_build


def test_builds_once_and_moves_the_result_into_place(tmp_path):
    calls = []

    def build(staging: Path) -> None:
        calls.append(staging)
        (staging / "weights.bin").write_text("w")

    target = tmp_path / "cache" / "model-abc"
    assert cached_build(target, build) == str(target)
    assert cached_build(target, build) == str(target)
    assert len(calls) == 1 and calls[0].name == "model-abc.partial"
    assert (target / "weights.bin").read_text() == "w" and (target / "READY").exists()
    assert not calls[0].exists()


def test_a_build_that_died_half_way_is_thrown_away_and_redone(tmp_path):
    target = tmp_path / "model-abc"

    def dies(staging: Path) -> None:
        (staging / "half.bin").write_text("h")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_build(target, dies)
    target.mkdir()  # as if the rename happened but the marker was never written
    (target / "stale.bin").write_text("s")

    cached_build(target, lambda staging: (staging / "weights.bin").write_text("w"))
    assert sorted(p.name for p in target.iterdir()) == ["READY", "weights.bin"]
    assert not target.with_name("model-abc.partial").exists()
