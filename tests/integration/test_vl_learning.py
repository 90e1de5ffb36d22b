"""RL on images: `python -m rollout.launch env=shapes model=tiny_vl` trains the tiny
vision-language policy (bootstrap/tiny_vl.py: an Idefics3 built from config) on
Shapes-v0 with the real program (Ray, a vLLM rollout worker serving the images, a
DeepSpeed learner that runs each trajectory's PNGs through the model's image
processor into its forward: learner/vision.py).

- The learner's logprobs of what the engine generated, on the engine's own weights
  (step 1 of a sync run trains on version 0, the weights vLLM served), match the
  engine's: `learner/mismatch_abs_logprob` within LOGPROB_TOLERANCE (without the
  pixels a forward reads the image tokens as text, far outside it:
  tests/integration/test_multimodal.py).
- The run's own evaluation (64 held-out tasks x 8 samples at temperature 1, seeds
  from 1e9, on the version it names) scores the start and the trained policy: the
  held-out accuracy rises by MARGIN. The task is Shapes-v0's colour counts over one
  or two shapes (answers 0-2), so that forty short steps of a two-layer policy show
  it: what it learns first may be the answers' prior as much as what it sees. Were
  training to do nothing, the two means (512 samples each, p ~0.4) would differ by
  ~0.031 in standard deviation: MARGIN is ~3.9 of them. Measured here (40 steps,
  lr 2e-3): 0.38 -> 0.57, 0.39 -> 0.57, 0.40 -> 0.58, 0.38 -> 0.58, ~55 s for the
  run. With 20 steps and 32 tasks the gain was 0.11-0.23 over six runs (the start
  alone read 0.35-0.41): too close to a margin that chance cannot give.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import LOGPROB_TOLERANCE

ROOT = Path(__file__).resolve().parents[2]
MARGIN = 0.12
RUN = [
    "env=shapes",
    "model=tiny_vl",
    "env.kwargs.questions=[count_colour]",
    "env.kwargs.min_shapes=1",
    "env.kwargs.max_shapes=2",
    "env.group_size=8",
    "buffer.groups_per_batch=4",
    "trainer.total_steps=40",
    "trainer.seed=0",
    "trainer.mode=sync",
    "learner.lr=2e-3",
    "rollout.max_tokens_per_turn=24",
    "eval.every=40",
    "eval.tasks=64",
    "eval.samples=8",
    "eval.temperature=1.0",
    "logger.wandb.enabled=false",
    "logger.progress=false",
]


def test_launch_trains_a_vision_language_policy_on_images(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "rollout.launch", *RUN, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    steps = [r for r in rows if "learner/samples" in r]
    assert [round(r["trainer/version"]) for r in steps] == list(range(1, 41))
    first = steps[0]
    assert first["learner/staleness_max"] == 0  # version 0: the weights vLLM served
    assert first["learner/mismatch_abs_logprob"] < LOGPROB_TOLERANCE, first
    summary = json.loads((run_dir / "summary.json").read_text())
    print(
        f"tiny_vl on Shapes: mismatch {first['learner/mismatch_abs_logprob']:.2e}, "
        f"held-out {summary['eval_first']:.3f} -> {summary['eval_last']:.3f}"
    )
    assert summary["eval_last"] - summary["eval_first"] > MARGIN, summary
