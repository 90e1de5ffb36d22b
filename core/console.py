"""What a run prints: asyncrl's own log lines, the progress bar and real warnings.

Owns the console policy, nothing else (stdlib only, so every process may import
it). Third-party notices a user can do nothing about are dropped where they are
emitted, not hidden by a blanket level:

- in this process, a filter on the logger that emits each known notice
  (`KNOWN_NOISE`), and the console handler shows other libraries' records from
  WARNING up only (all of them still reach Hydra's log file in the run directory);
- in the processes Ray and vLLM start, environment variables set before they
  start (inherited by Ray's workers and vLLM's engine processes): progress bars
  of weight loading off, torch's C++ notices at ERROR, and vLLM's logging
  configured from a file whose handler carries the same filter.

`logger.verbose=true` (or ASYNCRL_VERBOSE=1) changes none of this: everything shows.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

OWN_LOGGERS = ("asyncrl", "core", "envs", "rewards", "rollout", "learner", "orchestrator", "bench")
"""Logger-name roots of asyncrl's own modules: shown at INFO."""

KNOWN_NOISE: tuple[tuple[str, str], ...] = (
    # torchao's wheel ships a CUDA (sm90a) and a CPython-3.10 extension; neither can
    # load here and the CPU paths do not use them (torchao/__init__.py:89-96).
    ("torchao", "Failed to load "),
    # torchao registers its enums with pytree the way torch 2.13 deprecates
    # (torch/utils/_pytree.py:629-636): torchao's to fix, at every import.
    ("torch.utils._pytree", "is an Enum subclass and is now natively supported"),
    # Ray's notice that token auth is on by default (its recommended setting).
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled"),
    # vLLM on CPU: notices about GPU-only features and tuning it cannot act on here.
    ("vllm", "Enforce eager set"),
    ("vllm", "Inductor compilation was disabled"),
    ("vllm", "Triton is not installed"),
    ("vllm", "Triton is installed, but doesn't include CPU backend"),
    ("vllm", "Reset SSM cache type"),
    ("vllm", "Model Runner V2 requires Triton"),
    ("vllm", "is not found in LD_PRELOAD"),
    ("vllm", "[shutdown] Process manager: force killing"),
)
"""(logger-name root, message start or fragment) of notices that say nothing about a run."""

QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" / "Writing shards"
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # torch's C++ notices (NUMA binding of vLLM's CPU worker)
}


class NoiseFilter(logging.Filter):
    """Drops records that match KNOWN_NOISE (for dictConfig: `"()": "core.console.NoiseFilter"`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_noise(record)


class ConsoleFilter(NoiseFilter):
    """The console's share: asyncrl's own records, and others' from WARNING up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return super().filter(record) and (is_own(record.name) or record.levelno >= logging.WARNING)


def is_own(name: str) -> bool:
    return name.split(".")[0] in OWN_LOGGERS


def is_noise(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    for root, fragment in KNOWN_NOISE:
        if (record.name == root or record.name.startswith(root + ".")) and fragment in message:
            return True
    return False


def verbose_requested(verbose: bool) -> bool:
    return verbose or os.environ.get("ASYNCRL_VERBOSE") == "1"


def quiet(verbose: bool = False) -> None:
    """Apply the console policy to this process and to the processes it starts
    from here on (call before Ray and vLLM start); with `verbose`, do nothing."""
    if verbose_requested(verbose):
        os.environ["ASYNCRL_VERBOSE"] = "1"
        return
    for root in sorted({root for root, _ in KNOWN_NOISE}):
        logging.getLogger(root).addFilter(NoiseFilter())
    for handler in logging.getLogger().handlers:
        if _is_console(handler):
            handler.addFilter(ConsoleFilter())
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("VLLM_LOGGING_CONFIG_PATH", str(vllm_logging_config()))


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler
    )


def vllm_logging_config() -> Path:
    """vLLM's own logging setup (vllm/logger.py DEFAULT_LOGGING_CONFIG: WARNING
    and up, as asyncrl's workers ask with VLLM_LOGGING_LEVEL) plus NoiseFilter on
    its handler and on the loggers whose notices vLLM's imports trigger."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"noise": {"()": "core.console.NoiseFilter"}},
        "formatters": {
            "vllm": {
                "format": "%(levelname)s %(asctime)s [%(filename)s:%(lineno)d] %(message)s",
                "datefmt": "%m-%d %H:%M:%S",
            }
        },
        "handlers": {
            "vllm": {
                "class": "logging.StreamHandler",
                "formatter": "vllm",
                "filters": ["noise"],
                "level": "WARNING",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "vllm": {"handlers": ["vllm"], "level": "WARNING", "propagate": False},
            "torchao": {"filters": ["noise"]},
            "torch.utils._pytree": {"filters": ["noise"]},
        },
    }
    path = Path(tempfile.gettempdir()) / "asyncrl-vllm-logging.json"
    text = json.dumps(config, indent=2)
    if not path.exists() or path.read_text() != text:
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        staging.write_text(text)
        staging.replace(path)  # atomic: engines of another run may be reading it
    return path
