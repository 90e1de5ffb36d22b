"""The CPU expand-kernel replacement (vllm#55005) against a by-hand expansion, and
the check that tells which expand kernel vLLM's rejection sampler runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from rollout.vllm_plugin import expand_to_tokens


def test_expands_each_request_value_over_its_tokens_in_place():
    output = torch.full((7,), -5.0, dtype=torch.float32)
    temperatures = torch.tensor([0.7, -1.0, 1.3], dtype=torch.float32)
    cu_num_tokens = torch.tensor([2, 3, 6], dtype=torch.int32)  # 2, 1 and 3 tokens

    expand_to_tokens(output, temperatures, cu_num_tokens, replace_from=-1.0, replace_to=1.0)

    expected = torch.tensor([0.7, 0.7, 1.0, 1.3, 1.3, 1.3, -5.0])
    assert torch.allclose(output, expected)
    assert output.dtype == torch.float32


def test_keeps_integer_output_dtype():
    output = torch.zeros(4, dtype=torch.int32)
    top_k = torch.tensor([0, 5], dtype=torch.int32)
    expand_to_tokens(output, top_k, torch.tensor([1, 4]), replace_from=0, replace_to=50)
    assert output.tolist() == [50, 5, 5, 5]


INSPECT = """
import json, sys
from vllm.platforms.cpu import CpuPlatform
from rollout.vllm_plugin import expand_kernel_in_use, register
if sys.argv[1] == "plugin":
    register()
CpuPlatform.register_triton_kernel_overrides()  # what vLLM's CPU platform does at start-up
print(json.dumps(expand_kernel_in_use()))
"""


def _inspect(mode: str) -> dict:
    """expand_kernel_in_use() in a fresh interpreter (the kernel registry is
    process-global), with or without the plugin registered first."""
    done = subprocess.run(
        [sys.executable, "-c", INSPECT, mode], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_expand_kernel_check_tells_the_stock_shim_from_the_replacement():
    pytest.importorskip("vllm")
    stock = _inspect("stock")
    assert stock == {
        "function": "vllm.utils.cpu_triton_utils._expand_kernel_impl",
        "expands_correctly": False,  # vllm#55005: the float output is never written
    }
    assert _inspect("plugin") == {
        "function": "rollout.vllm_plugin.expand_to_tokens",
        "expands_correctly": True,
    }


def test_engine_spin_caps_how_long_vllm_readers_busy_wait(monkeypatch):
    """rollout.engine_spin_s reaches vLLM's SpinCondition (shm_broadcast.py:138), read
    in vLLM's processes from the environment the engine sets."""
    import zmq
    from vllm.distributed.device_communicators import shm_broadcast
    from vllm.utils.network_utils import get_open_zmq_ipc_path

    from rollout.vllm_plugin import _limit_spin

    condition = shm_broadcast.SpinCondition
    # vLLM's own __init__ for this test (an Engine started in this process may have
    # capped it already); all three restored afterwards
    monkeypatch.setattr(
        condition, "__init__", getattr(condition, "asyncrl_vllm_init", condition.__init__)
    )
    monkeypatch.delattr(condition, "asyncrl_vllm_init", raising=False)
    monkeypatch.delattr(condition, "asyncrl_spin_s", raising=False)
    context = zmq.Context()

    def reader_spin() -> float:
        reader = condition(True, context, get_open_zmq_ipc_path())
        spin = reader.busy_loop_s
        for socket in (reader.local_notify_socket, reader.read_cancel_socket):
            socket.close(linger=0)
        reader.write_cancel_socket.close(linger=0)
        return spin

    try:
        _limit_spin(None)
        assert reader_spin() == 1  # vLLM's own
        _limit_spin("0.05")
        assert reader_spin() == 0.05
        _limit_spin("0.2")  # a second engine in the process: the newest value
        assert reader_spin() == 0.2
    finally:
        context.term()


def test_only_the_intended_fp32_to_bf16_load_warning_is_dropped():
    """The models/utils.py line: an fp32 update into a bf16 engine is by design; any
    other dtype mismatch (or any other line) still reaches the log."""
    import logging

    from rollout.vllm_plugin import _intended_narrowing_notice

    def record(*args) -> logging.LogRecord:
        message = "Attempted to load weight %s with dtype %s into parameter with dtype %s"
        return logging.LogRecord("vllm", logging.WARNING, "utils.py", 333, message, args, None)

    assert not _intended_narrowing_notice(record("w", torch.float32, torch.bfloat16))
    assert _intended_narrowing_notice(record("w", torch.bfloat16, torch.float8_e4m3fn))
    assert _intended_narrowing_notice(record("w", torch.float64, torch.bfloat16))
    other = logging.LogRecord("vllm", logging.WARNING, "x.py", 1, "something %s", ("a",), None)
    assert _intended_narrowing_notice(other)


def test_eager_helpers_turn_torch_compile_off_so_a_compiled_function_runs_as_written(
    monkeypatch,
):
    from torch._dynamo.utils import counters

    from rollout.vllm_plugin import run_compiled_helpers_eagerly

    monkeypatch.setattr(torch._dynamo.config, "disable", False)  # restored afterwards
    run_compiled_helpers_eagerly()
    compiled_before = counters["frames"]["ok"]

    @torch.compile(backend="eager")
    def count_greater(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return (x > values).sum(-1)

    x = torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.2, 0.1]])
    assert count_greater(x, torch.tensor([[0.4], [0.15]])).tolist() == [2, 2]
    assert counters["frames"]["ok"] == compiled_before
