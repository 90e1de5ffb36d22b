"""Speculative acceptance per weight version (core.records.EngineStats,
orchestrator.summaries.version_acceptance): drafts are counted under the version
the engine held, the newest drafted version is reported across workers, and old
versions are dropped from what a worker keeps."""

from __future__ import annotations

import pytest

from core.records import SPEC_VERSIONS_KEPT, EngineStats
from orchestrator.summaries import fleet_metrics, version_acceptance


def test_acceptance_is_reported_for_the_newest_version_drafts_were_made_with():
    a, b = EngineStats("a", 2), EngineStats("b", 2)
    a.count_speculation(1, drafted=10, accepted=9, steps=10)  # the old policy: good drafts
    a.count_speculation(2, drafted=10, accepted=2, steps=10)
    b.count_speculation(2, drafted=30, accepted=6, steps=30)
    assert version_acceptance([a, b]) == {
        "spec/version": 2.0,
        "spec/version_acceptance_rate": pytest.approx(8 / 40),
    }
    metrics = fleet_metrics({"a": a, "b": b}, [])
    assert metrics["spec/acceptance_rate"] == pytest.approx(17 / 50)  # all-time hides the drop
    assert metrics["spec/version_acceptance_rate"] == pytest.approx(0.2)


def test_a_version_without_drafts_is_skipped_and_no_speculation_reports_nothing():
    stats = EngineStats("a", 3)
    assert version_acceptance([stats]) == {}
    stats.count_speculation(2, drafted=4, accepted=4, steps=4)
    stats.count_speculation(3, drafted=0, accepted=0, steps=0)
    assert version_acceptance([stats])["spec/version"] == 2.0


def test_a_worker_keeps_only_its_newest_versions():
    stats = EngineStats("a", 0)
    for version in range(10):
        stats.count_speculation(version, drafted=1, accepted=1, steps=1)
    assert sorted(stats.spec_by_version) == list(range(10 - SPEC_VERSIONS_KEPT, 10))
    assert stats.spec_drafted == 10
