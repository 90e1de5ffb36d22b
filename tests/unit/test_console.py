"""core.console: known third-party notices are dropped where emitted, the console
shows asyncrl's own INFO and others' warnings, and logger.verbose=true keeps all."""

from __future__ import annotations

import json
import logging
import os

import pytest

from core import console


@pytest.fixture
def fresh_logging(monkeypatch):
    """A console handler on the root logger and clean filters, restored afterwards."""
    for key in (*console.QUIET_ENV, "VLLM_LOGGING_CONFIG_PATH", "ASYNCRL_VERBOSE"):
        monkeypatch.delenv(key, raising=False)
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    names = {name for name, _ in console.KNOWN_NOISE}
    yield handler
    root.removeHandler(handler)
    for name in names:
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, console.NoiseFilter)]


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def _shown(handler: logging.Handler, name: str, level: int, message: str) -> bool:
    record = _record(name, level, message)
    return logging.getLogger(name).filter(record) and bool(handler.filter(record))


def test_quiet_console_by_default(fresh_logging):
    console.quiet(verbose=False)
    handler = fresh_logging
    assert not _shown(handler, "torchao", logging.WARNING, "Failed to load /x/_C_mxfp8.so: nope")
    assert not _shown(handler, "matplotlib.font_manager", logging.INFO, "generated new fontManager")
    assert _shown(handler, "orchestrator.run", logging.INFO, "policy: /x")
    assert _shown(handler, "ray", logging.WARNING, "a worker died")  # a real warning stays
    config = json.loads(open(console.vllm_logging_config()).read())
    assert config["handlers"]["vllm"]["filters"] == ["noise"]


def test_verbose_shows_everything(fresh_logging):
    console.quiet(verbose=True)
    handler = fresh_logging
    assert _shown(handler, "torchao", logging.WARNING, "Failed to load /x/_C_mxfp8.so: nope")
    assert _shown(handler, "matplotlib.font_manager", logging.INFO, "generated new fontManager")
    assert "VLLM_LOGGING_CONFIG_PATH" not in os.environ


def test_noise_filter_matches_by_logger_and_fragment():
    noise = console.NoiseFilter()
    assert not noise.filter(
        _record("vllm.platforms.cpu", logging.WARNING, "Triton is not installed.")
    )
    assert noise.filter(_record("vllm.engine", logging.WARNING, "KV cache is full"))
    assert noise.filter(_record("mylib", logging.WARNING, "Triton is not installed."))
