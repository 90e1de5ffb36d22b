"""The real program, as a user runs it, with a tiny budget (cleanrl-style smoke test)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from bench.memory import SUMMARY_READ as MEMORY_BENCH_READS
from tests.integration.conftest import TEST_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]
OWN_LINE = re.compile(
    r"^\[[\d\- :,]+\]\[(asyncrl|core|envs|rewards|rollout|learner|orchestrator)[\w.]*\]\[\w+\] - "
)
"""asyncrl's own log lines, as Hydra's job logging formats them."""
PROGRESS_BAR = re.compile(r"\d+/\d+ \[[^\]]*(step/s|s/step)")
JUSTIFIED = {
    # All of these come from vLLM's engine-core processes, which the rollout worker spawns
    # with multiprocessing: Ray's worker_process_setup_hook (core.console.quiet, set in
    # orchestrator/actors.start_ray) quiets the actors themselves, but these children
    # import vLLM, and through it torchao and torch, before any code of asyncrl runs there.
    # torchao's wheel ships extensions that cannot load here (CUDA sm90a, CPython 3.10), and
    # torchao registers enums the way torch 2.13 deprecates:
    r"torchao/_C_\w+[\w.-]*\.so": "torchao extension load at import",
    r"torch/utils/_pytree.py:\d+\] <enum": "torchao's enum registration at import",
    # vLLM logs it while importing, before it configures its logging (VLLM_LOGGING_CONFIG_PATH).
    r"Triton is installed, but doesn't include CPU backend": "vLLM import-time notice",
    # vLLM's weight-loading bar in the rollout worker (its use_tqdm_on_load engine arg).
    r"Loading safetensors checkpoint shards|^\(RolloutWorker pid=\d+\)\s*$": "vLLM load bar",
}


def unexplained_lines(output: str) -> list[str]:
    """Console lines that are neither asyncrl's own, the progress bar, nor justified above."""
    # tqdm redraws with carriage returns: a bar's redraws stay on one line
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in output.split("\n")]
    return [
        line
        for line in lines
        if line.strip()
        and not OWN_LINE.match(line)
        and not PROGRESS_BAR.search(line)
        and not any(re.search(pattern, line) for pattern in JUSTIFIED)
    ]


def test_console_lines_are_classified():
    """The classifier the run's check relies on: it must catch a stray line."""
    own = "[2026-01-01 00:00:00,000][orchestrator.run][INFO] - policy: x"
    noise = "(RolloutWorker pid=1) WARNING 11-29 [cpu.py:224] Triton is not installed."
    assert unexplained_lines(f"{own}\n  0%|  | 0/3 [00:00<?, ?step/s]\n{noise}") == [noise]


def test_launch_trains_and_writes_its_outputs(tmp_path, tiny_policy):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rollout.launch",
            "+experiment=agentic_grpo",
            "trainer.total_steps=3",
            "logger.plot_every=1",
            f"hydra.run.dir={run_dir}",
            *TEST_OVERRIDES,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2]
    assert [row["trainer/version"] for row in rows] == [1, 2, 3]
    for key in ("rollout/reward_mean", "learner/loss", "learner/kl_behavior", "sync/export_s"):
        assert all(key in row for row in rows), key
    # a version's publish overlaps the next step, and is logged with it
    assert all(row["sync/pause_s"] >= 0 for row in rows[1:])
    assert (run_dir / "reward_curve.png").stat().st_size > 10_000
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("process_s", "startup_s", "loop_s", "shutdown_s"):
        assert summary[key] > 0, key
    assert summary["startup_s"] + summary["loop_s"] + summary["shutdown_s"] < summary["process_s"]
    assert set(MEMORY_BENCH_READS) <= set(summary)  # bench.memory reads them after its run
    # a quiet console: every line is asyncrl's, the progress bar, or justified in JUSTIFIED
    assert unexplained_lines(result.stdout + result.stderr) == []
    # the bar: drawn at the start, once per step and once more when it closes
    assert len(PROGRESS_BAR.findall(result.stderr)) <= 1 + 3 + 1
    assert_loads_on_its_own(run_dir / "final_model")


def assert_loads_on_its_own(directory: Path) -> None:
    """final_model/ is a complete Hugging Face checkpoint: tokenizer, chat template and
    weights load from it alone, and the model generates from a chat prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert len(tokenizer.encode("What is 12 + 3?")) > 3
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 12 + 3?"}], add_generation_prompt=True
    )
    ids = torch.tensor([prompt if isinstance(prompt, list) else prompt["input_ids"]])
    model = AutoModelForCausalLM.from_pretrained(directory)
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_killed_driver_resumes_from_its_last_checkpoint(tmp_path, tiny_policy):
    """SIGKILL the whole run (driver, Ray, engines) right after its first
    checkpoint; `trainer.resume=true` on the same run directory continues at the
    checkpoint's step and version."""
    import os
    import signal
    import time

    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "rollout.launch",
        "+experiment=agentic_grpo",
        "trainer.total_steps=4",
        "trainer.checkpoint_every=2",
        f"hydra.run.dir={run_dir}",
        *TEST_OVERRIDES,
    ]
    first = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + 400
    while not latest.exists() and first.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    assert latest.read_text() == "step-2"

    second = subprocess.run(
        [*command, "trainer.resume=true"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumed = [row for row in rows if row["step"] >= 2][-2:]
    assert [row["step"] for row in resumed] == [2, 3]
    assert [row["trainer/version"] for row in resumed] == [3, 4]
    assert resumed[-1]["ledger/balanced"] == 1.0
