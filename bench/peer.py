"""Peer benchmark (issue 18): asyncrl against Hugging Face TRL's `GRPOTrainer` on the
same start policy, the same task and matched hyper-parameters, side by side in one
run on this machine (not a test).

    python -m bench.peer [--case tiny|larger|agentic] [--steps N] [--modes sync,async,...]
                         [--seeds N] [--json PATH]

One-turn cases (`tiny`, `larger`): asyncrl's calculator env cut to one turn and to sums
of two numbers up to 9 (`env.kwargs.max_turns=1`, `max_operands=2`, `max_value=9`,
`operators=+`): a question, one reply, scored by the env's own reward (a correct
`<answer>` 1.0, the format 0.1; a tool call ends the episode unanswered). TRL gets the
env's opening prompts rendered by the policy's chat template (bench.peer_tasks) and a
reward function that replays each completion through the same env; asyncrl runs the
env itself. `tiny`: the default tiny policy (3.3M parameters, warmed up on calculator
demos) with at most 20 new tokens, TRL's best case; `larger`: a ~25M-parameter Qwen3
built from config with random weights (its reward says nothing; its speed does) and
up to 256 new tokens.

Agentic case (`agentic`): the default workload's calculator task (2-3 operands up to
99, +-*, up to 3 turns), its tool answering in 0.5 s, the tiny policy. TRL runs it
through `GRPOTrainer(tools=[calculator])`, its multi-turn tool loop (trl/trainer/
grpo_trainer.py:1965-2060 in TRL 1.16: generate, parse each completion's tool calls
with the tokenizer's response schema, call the tools sample by sample, append the
results, generate again for the samples that called one), with: the opening messages
as prompts (TRL renders them with the tools; bench.peer_trl checks the render is
byte-identical to asyncrl's), TRL's Qwen3 response schema (our chat template writes
tool calls as Qwen3's does; TRL does not recognise the template by itself), the
env's calculator as an async tool with the same latency, `max_tool_calling_iterations`
= max_turns - 1, and a reward that replays the assistant turns through the env.
Differences that stay: TRL's token budget covers the whole completion
(`max_completion_length` = turns x per-turn tokens + TOOL_RESULT_TOKENS per tool
turn) where asyncrl's is per turn; TRL ends an episode on a malformed tool call where
the env answers it with an error and goes on.

Both: 16 prompts x 8 samples per step, temperature 1, lr 1e-4 constant, no KL,
grad-norm clip 1.0, token-mean loss (TRL's default `dapo` loss type), one update per
batch. Training prompts are drawn from the same task distribution (not the same
seeds: asyncrl's producer draws its own).

TRL runs in its own process (bench.peer_trl, the `peer` extra); asyncrl runs as a
user runs it (`python -m rollout.launch ...`), once per mode. Reported per side:
trained samples/s over the training loop, seconds per step, start-up, shut-down and
process wall time, the reward at equal loop time (the shortest loop of the sides),
and greedy accuracy on held-out tasks after training (and of the start policy; every
episode run to its end by the env); ratios against TRL. With `--seeds N` every side
runs N times (seeds 0..N-1, each seed's sides side by side) and the report gives the
means, the reward at equal loop time with its standard error across seeds: one run's
reward after 60 steps moves by ~0.02 from seed to seed on the tiny case, as much as
the sides differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
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
ONE_TURN = {
    "id": "asyncrl/Calculator-v0",
    "kwargs": {"max_turns": 1, "max_operands": 2, "max_value": 9, "operators": "+"},
}
AGENTIC = {
    "id": "asyncrl/Calculator-v0",
    "kwargs": {
        "max_turns": 3,
        "min_operands": 2,
        "max_operands": 3,
        "max_value": 99,
        "operators": "+-*",
        "tool_latency_s": 0.5,
    },
}
TOOL_RESULT_TOKENS = 32
"""What TRL's whole-completion budget allows per tool result it appends (a calculator
result in the tiny policy's template is ~15 tokens)."""
LARGER = TinyModelConfig(
    hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8, num_kv_heads=4, head_dim=64
)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    max_new_tokens: int
    """Per turn (asyncrl's rollout.max_tokens_per_turn)."""
    steps: int
    env: dict[str, Any] = dataclasses.field(default_factory=lambda: ONE_TURN)
    modes: tuple[str, ...] = ("sync", "async", "async_unborrowed")
    """asyncrl's sides when --modes is not given."""

    @property
    def max_turns(self) -> int:
        return int(self.env["kwargs"].get("max_turns", 1))

    @property
    def completion_tokens(self) -> int:
        """TRL's budget for a whole completion: every turn, and the tool results between."""
        return self.max_turns * self.max_new_tokens + (self.max_turns - 1) * TOOL_RESULT_TOKENS


CASES = {
    "tiny": Case("tiny", 20, 60),
    "larger": Case("larger", 256, 4),
    "agentic": Case("agentic", 48, 10, AGENTIC, ("sync", "async")),
}
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
    modes = args.modes.split(",") if args.modes else list(case.modes)
    if unknown := set(modes) - set(MODES):
        known = ", ".join(MODES)
        raise SystemExit(f"--modes: unknown {', '.join(sorted(unknown))}; known: {known}")
    hyper = {
        "prompts_per_step": PROMPTS_PER_STEP,
        "group_size": GROUP_SIZE,
        "max_new_tokens": case.max_new_tokens,
        "max_completion_tokens": case.completion_tokens,
        "lr": 1e-4,
        "steps": case.steps,
    }
    start_accuracy = _held_out({"start": start}, case)  # the same for every seed
    reports = []
    with tempfile.TemporaryDirectory(prefix="asyncrl-peer-") as tmp:
        for seed in range(args.seeds):
            work = Path(tmp) / f"seed-{seed}"
            work.mkdir()
            seeded = hyper | {"seed": seed}
            sides = {"trl": _run_trl(start, seeded, case, work)}
            for mode in modes:
                sides[f"asyncrl_{mode}"] = _run_asyncrl(start, seeded, case, mode, work)
            finals = {name: side["final_model"] for name, side in sides.items()}
            reports.append(_report(case, sides, start_accuracy | _held_out(finals, case)))
    report = pooled(reports)
    _print(report)
    write_json(args.json, "peer", report)


def _policy(case: Case) -> str:
    if case.name != "larger":
        return policy()
    from bench.weight_sync import ensure_model

    return ensure_model("peer-larger", LARGER)


def _run_trl(start: str, hyper: dict[str, Any], case: Case, work: Path) -> dict[str, Any]:
    from bench.peer_tasks import opening, prompts

    seeds = list(range(hyper["steps"] * hyper["prompts_per_step"]))
    spec = {
        "policy": start,
        "env": case.env,
        "prompts": prompts(start, case.env, seeds),
        "seeds": seeds,
        "hyper": hyper,
    }
    if case.max_turns > 1:  # TRL's tool loop takes messages and renders them itself
        spec["messages"] = [opening(case.env, seed) for seed in seeds]
        spec["max_turns"] = case.max_turns
    (work / "trl").mkdir()
    (work / "trl" / "spec.json").write_text(json.dumps(spec))
    out = work / "trl" / "out.json"
    command = [sys.executable, "-m", "bench.peer_trl", str(work / "trl" / "spec.json"), str(out)]
    wall = _timed(command, "TRL")
    return json.loads(out.read_text()) | {"process_s": wall}


def _run_asyncrl(
    start: str, hyper: dict[str, Any], case: Case, mode: str, work: Path
) -> dict[str, Any]:
    run_dir = work / f"asyncrl-{mode}"
    overrides = [
        f"model.path={start}",
        f"env.id={case.env['id']}",
        *[f"env.kwargs.{key}={value}" for key, value in case.env["kwargs"].items()],
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


def _held_out(policies: dict[str, str], case: Case) -> dict[str, float]:
    """Greedy accuracy on HELD_OUT unseen tasks, per named policy directory."""
    from bench.peer_tasks import solved

    seeds = [HELD_OUT_SEED + i for i in range(HELD_OUT)]
    accuracy = {}
    for name, path in policies.items():
        right = solved(path, case.env, seeds, case.max_new_tokens)
        accuracy[name] = sum(right) / len(right)
    return accuracy


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
            "step_end_s": [s["loop_s"] for s in side["steps"]],
            "accounting": side.get("accounting", {}),
        }
    return {
        "case": dataclasses.asdict(case),
        "equal_loop_time_s": equal_time,
        "held_out_start_accuracy": held_out["start"],
        "sides": rows,
        "ratios": _ratios(rows),
    }


POOLED = (
    "samples_per_s",
    "step_s",
    "startup_s",
    "shutdown_s",
    "loop_s",
    "process_s",
    "held_out_accuracy",
)
"""What a side's pooled row averages over seeds (with the reward at equal loop time,
which a seed may lack)."""


def pooled(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report of the same shape from the reports of several seeds (each its own
    side-by-side run, equal loop time taken per seed): per side the mean over seeds
    of each POOLED number, of the reward at equal loop time (with its standard error
    across seeds, `reward_at_equal_time_se`), of each step's reward and of each
    accounting row, and `per_seed` the values it averaged; ratios against TRL of the
    means. A single report comes back as it is, with `seeds` 1."""
    if len(reports) == 1:
        return reports[0] | {"seeds": 1}
    sides = {}
    for name in reports[0]["sides"]:
        runs = [r["sides"][name] for r in reports]
        row: dict[str, Any] = {key: statistics.fmean([run[key] for run in runs]) for key in POOLED}
        rewards = [run["reward_at_equal_time"] for run in runs]
        known = [r for r in rewards if r is not None]
        row["reward_at_equal_time"] = statistics.fmean(known) if known else None
        row["reward_at_equal_time_se"] = (
            statistics.stdev(known) / len(known) ** 0.5 if len(known) > 1 else None
        )
        row["per_seed"] = {
            key: [run[key] for run in runs]
            for key in ("samples_per_s", "process_s", "reward_at_equal_time", "held_out_accuracy")
        }
        per_step = zip(*(run["rewards"] for run in runs), strict=False)  # to the shortest
        row["rewards"] = [_mean_or_none(step) for step in per_step]
        ends = zip(*(run.get("step_end_s", []) for run in runs), strict=False)
        row["step_end_s"] = [statistics.fmean(step) for step in ends] or None
        row["accounting"] = _mean_rows([run.get("accounting", {}) for run in runs])
        sides[name] = row
    return {
        "case": reports[0]["case"],
        "seeds": len(reports),
        "equal_loop_time_s": statistics.fmean([r["equal_loop_time_s"] for r in reports]),
        "held_out_start_accuracy": reports[0]["held_out_start_accuracy"],
        "sides": sides,
        "ratios": _ratios(sides),
    }


def _ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    trl = rows["trl"]
    return {
        f"{name}/trl {what}": rows[name][key] / trl[key]
        for name in rows
        if name != "trl"
        for what, key in (("samples/s", "samples_per_s"), ("process time", "process_s"))
    }


def _mean_or_none(values: tuple[float | None, ...]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each key's mean over the rows that have it."""
    keys = {key for row in rows for key in row}
    return {key: statistics.fmean([row[key] for row in rows if key in row]) for key in sorted(keys)}


def _reward_at(steps: list[dict[str, float]], when: float) -> float | None:
    """Mean reward of the REWARD_WINDOW steps that ended last by loop time `when`."""
    done = [s["reward"] for s in steps if s["loop_s"] <= when and s.get("reward") is not None]
    window = done[-REWARD_WINDOW:]
    return sum(window) / len(window) if window else None


def describe(case: dict[str, Any]) -> str:
    """One line on a case as its report records it (older reports have no env)."""
    kwargs = case.get("env", {}).get("kwargs", {})
    line = f"{case['name']} case: {case['steps']} steps x {PROMPTS_PER_STEP * GROUP_SIZE} samples"
    turns = kwargs.get("max_turns", 1)
    if turns == 1:
        return f"{line}, at most {case['max_new_tokens']} new tokens"
    latency = kwargs.get("tool_latency_s", 0.0)
    return (
        f"{line}, up to {turns} turns of at most {case['max_new_tokens']} new tokens, "
        f"tool latency {latency:g} s"
    )


def reward_cell(side: dict[str, Any]) -> str:
    """A side's reward at equal loop time as a report shows it: with its standard
    error across seeds where there were several."""
    reward, se = side["reward_at_equal_time"], side.get("reward_at_equal_time_se")
    if reward is None:
        return "n/a"
    return f"{reward:.3f}" if se is None else f"{reward:.3f} ± {se:.3f}"


def equal_time_phrase(report: dict[str, Any]) -> str:
    """How the report's equal loop time was taken: one run's, or the mean over seeds."""
    seconds = f"{report['equal_loop_time_s']:.0f} s"
    seeds = report.get("seeds", 1)
    if seeds == 1:
        return f"reward at equal loop time {seconds}"
    return f"means of {seeds} seeds; reward at equal loop time (per seed, mean {seconds})"


def _print(report: dict[str, Any]) -> None:
    case = report["case"]
    print(
        f"\npeer benchmark, {describe(case)}; {equal_time_phrase(report)}; held-out greedy "
        f"accuracy of the start policy {report['held_out_start_accuracy']:.2f}"
    )
    print(
        f"  {'side':<15} {'samples/s':>9} {'s/step':>7} {'start s':>8} {'shut s':>7} "
        f"{'process s':>9} {'reward@T':>15} {'held-out':>8}"
    )
    for name, r in report["sides"].items():
        print(
            f"  {name:<15} {r['samples_per_s']:>9.1f} {r['step_s']:>7.2f} {r['startup_s']:>8.1f} "
            f"{r['shutdown_s']:>7.1f} {r['process_s']:>9.1f} "
            f"{reward_cell(r):>15} {r['held_out_accuracy']:>8.2f}"
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
        "--modes",
        default="",
        help=f"asyncrl sides to run, of {', '.join(MODES)} (default: the case's)",
    )
    args.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="side-by-side runs, seeds 0..N-1 (TRL's seed and asyncrl's trainer.seed); "
        "the report averages them, with the reward's standard error across seeds",
    )
    return args.parse_args()


if __name__ == "__main__":
    main()
