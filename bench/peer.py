"""Peer benchmark (issue 18): asyncrl against Hugging Face TRL's `GRPOTrainer` on the
same start policy, the same task and matched hyper-parameters, side by side in one
run on this machine (not a test).

    python -m bench.peer [--case tiny|larger] [--steps 60] [--modes sync,async,async_unborrowed]
                         [--json PATH]

The task is asyncrl's calculator env cut to one turn and to sums of two numbers up to
9 (`env.kwargs.max_turns=1`, `max_operands=2`, `max_value=9`, `operators=+`): a
question, one reply, scored by the env's own reward (a correct `<answer>` 1.0, the
format 0.1; a tool call ends the episode unanswered). TRL gets the env's opening
prompts rendered by the policy's chat template (bench.peer_tasks) and a reward
function that replays each completion through the same env; asyncrl runs the env
itself. Both: 16 prompts x 8 samples per step, at most `max_new_tokens` new tokens,
temperature 1, lr 1e-4 constant, no KL, grad-norm clip 1.0, token-mean loss (TRL's
default `dapo` loss type), one update per batch. Training prompts are drawn from the
same task distribution (not the same seeds: asyncrl's producer draws its own).

Cases: `tiny`, the default tiny policy (3.3M parameters, warmed up on calculator
demos) with at most 20 new tokens, TRL's best case; `larger`, a ~25M-parameter
Qwen3 built from config with random weights (its reward says nothing; its speed
does) and up to 256 new tokens.

TRL runs in its own process (bench.peer_trl, the `peer` extra); asyncrl runs as a
user runs it (`python -m rollout.launch ...`), once per mode. Reported per side:
trained samples/s over the training loop, seconds per step, start-up, shut-down and
process wall time, the reward at equal loop time (the shortest loop of the sides),
and greedy accuracy on held-out tasks after training (and of the start policy);
ratios against TRL.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.preamble import environment, parser, policy
from bench.record import write_json
from core.config import TinyModelConfig

PROMPTS_PER_STEP = 16
GROUP_SIZE = 8
HELD_OUT = 128
HELD_OUT_SEED = 10_000_000
REWARD_WINDOW = 5
"""Steps averaged for the reward at a point in time (a single step's 128 samples are noisy)."""
ENV = {
    "id": "asyncrl/Calculator-v0",
    "kwargs": {"max_turns": 1, "max_operands": 2, "max_value": 9, "operators": "+"},
}
LARGER = TinyModelConfig(
    hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8, num_kv_heads=4, head_dim=64
)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    max_new_tokens: int
    steps: int


CASES = {"tiny": Case("tiny", 20, 60), "larger": Case("larger", 256, 4)}
RUN_BOUND_S = 3600
MODES = {
    "sync": ("trainer.mode=sync",),
    "async": ("trainer.mode=async",),
    "async_unborrowed": ("trainer.mode=async", "learner.borrow_idle_cores=false"),
}
"""asyncrl's sides: sync, async, and async as it ran before its learner borrowed the
engines' idle cores (for the record of what that changed)."""


def main() -> None:
    args = _parse()
    environment(vllm=True)
    case = dataclasses.replace(CASES[args.case], steps=args.steps or CASES[args.case].steps)
    start = _policy(case)
    hyper = {
        "prompts_per_step": PROMPTS_PER_STEP,
        "group_size": GROUP_SIZE,
        "max_new_tokens": case.max_new_tokens,
        "lr": 1e-4,
        "steps": case.steps,
        "seed": 0,
    }
    with tempfile.TemporaryDirectory(prefix="asyncrl-peer-") as tmp:
        work = Path(tmp)
        sides = {"trl": _run_trl(start, hyper, work)}
        modes = args.modes.split(",")
        if unknown := set(modes) - set(MODES):
            known = ", ".join(MODES)
            raise SystemExit(f"--modes: unknown {', '.join(sorted(unknown))}; known: {known}")
        for mode in modes:
            sides[f"asyncrl_{mode}"] = _run_asyncrl(start, hyper, mode, work)
        held_out = _held_out(start, {k: v["final_model"] for k, v in sides.items()}, case)
    report = _report(case, sides, held_out)
    _print(report)
    write_json(args.json, "peer", report)


def _policy(case: Case) -> str:
    if case.name == "tiny":
        return policy()
    from bench.weight_sync import ensure_model

    return ensure_model("peer-larger", LARGER)


def _run_trl(start: str, hyper: dict[str, Any], work: Path) -> dict[str, Any]:
    from bench.peer_tasks import prompts

    seeds = list(range(hyper["steps"] * hyper["prompts_per_step"]))
    spec = {
        "policy": start,
        "env": ENV,
        "prompts": prompts(start, ENV, seeds),
        "seeds": seeds,
        "hyper": hyper,
    }
    (work / "trl").mkdir()
    (work / "trl" / "spec.json").write_text(json.dumps(spec))
    out = work / "trl" / "out.json"
    command = [sys.executable, "-m", "bench.peer_trl", str(work / "trl" / "spec.json"), str(out)]
    wall = _timed(command, "TRL")
    return json.loads(out.read_text()) | {"process_s": wall}


def _run_asyncrl(start: str, hyper: dict[str, Any], mode: str, work: Path) -> dict[str, Any]:
    run_dir = work / f"asyncrl-{mode}"
    overrides = [
        f"model.path={start}",
        f"env.id={ENV['id']}",
        *[f"env.kwargs.{key}={value}" for key, value in ENV["kwargs"].items()],
        f"env.group_size={hyper['group_size']}",
        f"buffer.groups_per_batch={hyper['prompts_per_step']}",
        f"rollout.max_tokens_per_turn={hyper['max_new_tokens']}",
        f"learner.lr={hyper['lr']}",
        "algo.kl_coef=0",
        f"trainer.total_steps={hyper['steps']}",
        *MODES[mode],
        f"trainer.seed={hyper['seed']}",
        f"logger.run_dir={run_dir}",
        "logger.wandb.enabled=false",
        "logger.progress=false",
    ]
    wall = _timed([sys.executable, "-m", "rollout.launch", *overrides], f"asyncrl {mode}")
    summary = json.loads((run_dir / "summary.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [
        {"loop_s": m["perf/elapsed_s"], "reward": m["rollout/reward_mean"]}
        for m in history
        if "perf/elapsed_s" in m
    ]
    return {
        "startup_s": summary["startup_s"],
        "loop_s": summary["loop_s"],
        "shutdown_s": summary["shutdown_s"],
        "process_s": wall,
        "steps": steps,
        "accounting": accounting(history),
        "final_model": str(run_dir / "final_model"),
    }


ACCOUNTED = (
    "perf/step_s",
    "perf/learner_wait_s",
    "perf/learner_step_s",
    "perf/learner_borrowed_s",
    "sync/pause_s",
    "perf/cpu_s/driver",
    "perf/cpu_s/learner",
    "perf/cpu_s/rollout",
    "perf/cpu_s/env",
    "perf/cpu_s/ray",
    "perf/cpu_busy",
)
"""Where a step's wall time and each process role's CPU seconds go (the run's own
perf/* metrics; orchestrator.summaries.StepClock, learner.trainer)."""


def accounting(history: list[dict[str, float]]) -> dict[str, float]:
    """Means over the steps after the first (which also pays for warming up) of each
    ACCOUNTED metric the run logged; every step when there is only one."""
    steps = [m for m in history if "perf/step_s" in m]
    steps = steps[1:] or steps
    means = {}
    for key in ACCOUNTED:
        values = [m[key] for m in steps if key in m]
        if values:
            means[key] = sum(values) / len(values)
    return means


def _timed(command: list[str], what: str) -> float:
    print(f"running {what}: {' '.join(command[:3])} ...", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_BOUND_S)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed (exit {done.returncode}): {done.stderr[-3000:]}")
    return time.perf_counter() - started


def _held_out(start: str, finals: dict[str, str], case: Case) -> dict[str, float]:
    """Greedy accuracy on HELD_OUT unseen tasks, per trained policy and the start one."""
    from bench.peer_tasks import correct, prompts

    seeds = [HELD_OUT_SEED + i for i in range(HELD_OUT)]
    accuracy = {}
    for name, path in {"start": start, **finals}.items():
        replies = _greedy(path, prompts(path, ENV, seeds), case.max_new_tokens)
        right = [correct(ENV, s, r) for s, r in zip(seeds, replies, strict=True)]
        accuracy[name] = sum(right) / len(right)
    return accuracy


def _greedy(path: str, texts: list[str], max_new_tokens: int) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, batch["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new, skip_special_tokens=True)


def _report(case: Case, sides: dict[str, dict], held_out: dict[str, float]) -> dict[str, Any]:
    equal_time = min(s["loop_s"] for s in sides.values())
    samples = case.steps * PROMPTS_PER_STEP * GROUP_SIZE
    rows = {}
    for name, side in sides.items():
        rows[name] = {
            "samples_per_s": samples / side["loop_s"],
            "step_s": side["loop_s"] / case.steps,
            "startup_s": side["startup_s"],
            "shutdown_s": side["shutdown_s"],
            "loop_s": side["loop_s"],
            "process_s": side["process_s"],
            "reward_at_equal_time": _reward_at(side["steps"], equal_time),
            "held_out_accuracy": held_out[name],
            "rewards": [s.get("reward") for s in side["steps"]],
            "accounting": side.get("accounting", {}),
        }
    trl = rows["trl"]
    ratios = {
        f"{name}/trl {what}": rows[name][key] / trl[key]
        for name in rows
        if name != "trl"
        for what, key in (("samples/s", "samples_per_s"), ("process time", "process_s"))
    }
    return {
        "case": dataclasses.asdict(case),
        "equal_loop_time_s": equal_time,
        "held_out_start_accuracy": held_out["start"],
        "sides": rows,
        "ratios": ratios,
    }


def _reward_at(steps: list[dict[str, float]], when: float) -> float | None:
    """Mean reward of the REWARD_WINDOW steps that ended last by loop time `when`."""
    done = [s["reward"] for s in steps if s["loop_s"] <= when and s.get("reward") is not None]
    window = done[-REWARD_WINDOW:]
    return sum(window) / len(window) if window else None


def _print(report: dict[str, Any]) -> None:
    case = report["case"]
    print(
        f"\npeer benchmark, {case['name']} case: {case['steps']} steps x "
        f"{PROMPTS_PER_STEP * GROUP_SIZE} samples, <= {case['max_new_tokens']} new tokens; "
        f"reward at equal loop time {report['equal_loop_time_s']:.0f}s; held-out greedy "
        f"accuracy of the start policy {report['held_out_start_accuracy']:.2f}"
    )
    print(
        f"  {'side':<15} {'samples/s':>9} {'s/step':>7} {'start s':>8} {'shut s':>7} "
        f"{'process s':>9} {'reward@T':>9} {'held-out':>8}"
    )
    for name, r in report["sides"].items():
        reward = r["reward_at_equal_time"]
        print(
            f"  {name:<15} {r['samples_per_s']:>9.1f} {r['step_s']:>7.2f} {r['startup_s']:>8.1f} "
            f"{r['shutdown_s']:>7.1f} {r['process_s']:>9.1f} "
            f"{'n/a' if reward is None else f'{reward:.3f}':>9} {r['held_out_accuracy']:>8.2f}"
        )
    for name, ratio in report["ratios"].items():
        print(f"  {name}: {ratio:.2f}x")
    accounted = {n: r["accounting"] for n, r in report["sides"].items() if r.get("accounting")}
    if accounted:
        print("  where a step goes (mean over steps after the first):")
        for key in ACCOUNTED:
            cells = " ".join(f"{a.get(key, float('nan')):>14.3f}" for a in accounted.values())
            print(f"  {key:<26} {cells}")


def _parse() -> argparse.Namespace:
    args = parser(__doc__)
    args.add_argument("--case", choices=sorted(CASES), default="tiny")
    args.add_argument("--steps", type=int, default=0, help="steps per side (default: the case's)")
    args.add_argument(
        "--modes", default=",".join(MODES), help=f"asyncrl sides to run, of {', '.join(MODES)}"
    )
    return args.parse_args()


if __name__ == "__main__":
    main()
