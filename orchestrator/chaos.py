"""Chaos: a normal training run while a driver kills its actors, then a verdict.

`python -m orchestrator.chaos [--seed N] [--kills N] [overrides...]` (`make chaos`)
launches the run exactly as `rollout.launch` does (`orchestrator.run.run`), with
a `ChaosDriver` beside the training loop. The driver kills, with
`ray.kill(actor, no_restart=True)`, a rollout worker, an env pool or a learner
rank, one at a time, per a schedule drawn from the seed; after each kill it waits
(bounded) until the run has recovered on its own before the next delay starts:

- rollout worker: the supervisor replaces it under the same id, loaded with the
  current weights;
- env pool: the producer replaces it and re-runs the groups that were on it;
- learner rank: the next learner call fails, `System.restart_learner` starts new
  ranks restored from the newest checkpoint and the call is retried (the driver
  waits for a first checkpoint before it kills the learner, so there is one).

At the end it prints and writes `<run_dir>/chaos.json`: the ledger (counts per
state, produced, trained, trained beyond `buffer.replay_ratio`, and what the
producer's own records leave unaccounted or overdue: `orchestrator.ledger.audit`,
the check the run's `ledger/unaccounted` metric makes), the kills
(time, target, how recovered) and the problems; the exit code is 1 when there is
any. Owns: the kill schedule, the driver, the final accounting and verdict. It
does not own recovery itself: that is the supervisor's, producer's and System's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.config import Config, ConfigError
from core.waits import bounded
from orchestrator.checkpoint import checkpoints_dir, latest
from orchestrator.ledger import STATES, Audit

log = logging.getLogger(__name__)

TARGETS = ("rollout", "pool", "learner")
POLL_S = 0.2
DEFAULT_OVERRIDES = [
    "+experiment=agentic_grpo",
    # Shortened to ~8 minutes on 2 CPU cores: ~6 of training, enough for the default 10
    # kills and their recoveries (a replaced vLLM worker takes ~85 s here). A seed that
    # draws more rollout kills needs more steps: trainer.total_steps=...
    "trainer.total_steps=180",
    "trainer.checkpoint_every=4",  # a restored learner loses at most 4 steps
    "env.group_size=4",
    "buffer.groups_per_batch=4",
    # Two engines, so a killed one leaves the other generating (with a single engine
    # a publish during its replacement has no worker to load: NoLiveWorkers).
    "rollout.num_workers=2",
    "supervisor.interval_s=1.0",
    "logger.wandb.enabled=false",
    "logger.progress=false",
    "logger.plot_every=0",
]


@dataclass(frozen=True)
class ChaosConfig:
    seed: int = 0
    """Draws the delays, the targets and which actor of a kind is hit."""
    kills: int = 10
    min_interval_s: float = 2.0
    """Shortest wait after the previous kill recovered (or the driver started)."""
    max_interval_s: float = 6.0
    targets: tuple[str, ...] = TARGETS
    """Kinds of actor to kill: rollout, pool, learner (each hit at least once
    when `kills` allows)."""
    recovery_timeout_s: float = 300.0
    """How long the driver waits for a kill to be recovered before it reports it."""


@dataclass(frozen=True)
class PlannedKill:
    delay_s: float
    """After the previous kill recovered (or the driver started)."""
    target: str
    pick: int
    """Which actor of the kind: pick % how many there are at kill time."""


@dataclass
class Kill:
    at_s: float
    """Seconds since the driver started."""
    target: str
    """The actor: rollout-1, pool-0, learner-rank-0."""
    kind: str
    version: int
    """Policy version the rollout workers served when it was killed."""
    recovered_after_s: float | None = None
    how: str = "not recovered before the run ended"
    timed_out: bool = False


@dataclass
class Accounts:
    """The ledger at the end of the run, held to the producer's records."""

    counts: dict[str, int]
    produced: int
    trained: int
    unaccounted: list[str]
    """Issued and never recorded, recorded and never issued, or in flight while
    their group neither runs nor waits to re-run: nobody will account for them."""
    overdue: list[str]
    """In flight in a group awaited past supervisor.group_deadline_s."""
    over_reused: list[str]
    """Trained more times than buffer.replay_ratio."""
    trained_more_than_once: int

    @property
    def balanced(self) -> bool:
        return not self.unaccounted and not self.overdue


def plan(cfg: ChaosConfig) -> list[PlannedKill]:
    """The kill schedule `cfg.seed` draws: every target at least once (when there
    are enough kills), the rest uniform, delays in [min, max] interval."""
    unknown = set(cfg.targets) - set(TARGETS)
    if unknown or not cfg.targets:
        raise ConfigError(f"chaos targets must be among {', '.join(TARGETS)}; got {cfg.targets}")
    if not 0 <= cfg.min_interval_s <= cfg.max_interval_s:
        raise ConfigError("chaos intervals need 0 <= min_interval_s <= max_interval_s")
    rng = random.Random(cfg.seed)
    kinds = list(dict.fromkeys(cfg.targets))[: cfg.kills]
    kinds += [rng.choice(cfg.targets) for _ in range(cfg.kills - len(kinds))]
    rng.shuffle(kinds)
    return [
        PlannedKill(rng.uniform(cfg.min_interval_s, cfg.max_interval_s), kind, rng.randrange(1024))
        for kind in kinds
    ]


def accounts(ledger_state: dict[str, Any], audit: Audit, replay_ratio: int) -> Accounts:
    """The final ledger's counts and reuse, and what `audit` (taken with it) found."""
    states: dict[str, str] = ledger_state.get("states", {})
    times: dict[str, int] = ledger_state.get("times_trained", {})
    tally = Counter(states.values())
    return Accounts(
        counts={state: tally.get(state, 0) for state in STATES},
        produced=len(states),
        trained=sum(1 for n in times.values() if n > 0),
        unaccounted=sorted(audit.unaccounted),
        overdue=sorted(audit.overdue),
        over_reused=sorted(t for t, n in times.items() if n > replay_ratio),
        trained_more_than_once=sum(1 for n in times.values() if n > 1),
    )


def verdict(
    books: Accounts | None,
    kills: list[Kill],
    kills_wanted: int,
    steps_done: int,
    total_steps: int,
    error: str | None = None,
) -> list[str]:
    """What went wrong, one line each; empty when the run passed."""
    problems = [f"the run failed: {error}"] if error else []
    if steps_done < total_steps:
        problems.append(f"the run finished {steps_done} of {total_steps} steps")
    if books is None:
        problems.append("no final ledger (the run did not finish)")
    else:
        if books.unaccounted:
            problems.append(
                f"{len(books.unaccounted)} trajectories unaccounted for, e.g. "
                f"{books.unaccounted[:3]}"
            )
        if books.overdue:
            problems.append(
                f"{len(books.overdue)} trajectories overdue (their group was never declared "
                f"lost), e.g. {books.overdue[:3]}"
            )
        if books.over_reused:
            problems.append(
                f"{len(books.over_reused)} trajectories trained beyond the reuse limit, "
                f"e.g. {books.over_reused[:3]}"
            )
    if len(kills) < kills_wanted:
        problems.append(f"only {len(kills)} of {kills_wanted} kills happened before the run ended")
    problems += [
        f"{k.target} (killed at {k.at_s:.0f}s) did not recover" for k in kills if k.timed_out
    ]
    return problems


class ChaosDriver:
    """Runs next to the training loop (`run(cfg, alongside=driver)`) and kills per plan."""

    def __init__(self, cfg: ChaosConfig, run_dir: str):
        self.cfg = cfg
        self.run_dir = run_dir
        self.plan = plan(cfg)
        self.kills: list[Kill] = []
        self.started = 0.0

    async def __call__(self, system: Any) -> None:
        self.started = time.monotonic()
        for planned in self.plan:
            await asyncio.sleep(planned.delay_s)
            kill = getattr(self, f"_kill_{planned.target}")
            recovered, how = await kill(system, planned.pick)
            record = self.kills[-1]
            try:
                await bounded(
                    _until(recovered), self.cfg.recovery_timeout_s, f"{record.target} to recover"
                )
                record.how = await how()
            except Exception as exc:  # noqa: BLE001 - a recovery that fails is the finding
                record.timed_out, record.how = True, f"not recovered: {exc}"
                continue
            record.recovered_after_s = round(self._now() - record.at_s, 1)
            log.warning(
                "chaos: %s recovered after %.1fs: %s",
                record.target,
                record.recovered_after_s,
                record.how,
            )

    async def _kill_rollout(self, system: Any, pick: int) -> tuple[Callable, Callable]:
        live = sorted(system.fleet.live_workers)
        worker_id = live[pick % len(live)]
        handle = system.fleet.workers[worker_id]
        self._kill(system, handle, worker_id, "rollout")

        def recovered() -> bool:
            return (
                system.fleet.workers[worker_id] is not handle and worker_id not in system.fleet.dead
            )

        async def how() -> str:
            return f"supervisor replaced it under the same id, loaded with v{system.fleet.version}"

        return recovered, how

    async def _kill_pool(self, system: Any, pick: int) -> tuple[Callable, Callable]:
        index = pick % len(system.fleet.pools)
        handle = system.fleet.pools[index]
        try:
            stats = await bounded(handle.stats.remote(), 10.0, f"pool-{index} stats")
            running = stats.in_flight
        except Exception:  # noqa: BLE001 - only for the report
            running = "?"
        self._kill(system, handle, f"pool-{index}", "pool")

        def recovered() -> bool:
            return system.fleet.pools[index] is not handle

        async def how() -> str:
            await bounded(
                system.fleet.pools[index].stats.remote(), 60.0, f"new pool-{index} to answer"
            )
            return f"producer replaced it; its {running} episodes in flight re-run on the new pool"

        return recovered, how

    async def _kill_learner(self, system: Any, pick: int) -> tuple[Callable, Callable]:
        # A learner killed before the first checkpoint restarts from the initial
        # policy; wait (bounded) for one so the kill exercises the restore.
        try:
            await bounded(
                _until(lambda: latest(self.run_dir) is not None),
                self.cfg.recovery_timeout_s,
                "a first checkpoint",
            )
        except TimeoutError:
            log.warning("chaos: no checkpoint yet; killing the learner anyway")
        group, restarts = system.learner.group, system.learner.restarts
        rank = pick % len(group.ranks)
        self._kill(system, group.ranks[rank], f"learner-rank-{rank}", "learner")
        seen: dict[str, Any] = {}

        def recovered() -> bool:
            # Restarted, then two versions on: the second was exported by the new ranks
            # (the first may have been in flight from the old ones).
            if system.learner.restarts <= restarts:
                return False
            if "version" not in seen:
                seen["version"], seen["checkpoint"] = system.fleet.version, latest(self.run_dir)
            return system.fleet.version >= seen["version"] + 2

        async def how() -> str:
            source = seen.get("checkpoint")
            where = f"checkpoints/{source.name}" if source else "the initial policy"
            return (
                f"restart_learner: new rank(s) from {where}; trained on to v{system.fleet.version}"
            )

        return recovered, how

    def _kill(self, system: Any, actor: Any, target: str, kind: str) -> None:
        import ray

        ray.kill(actor, no_restart=True)
        self.kills.append(Kill(round(self._now(), 1), target, kind, system.fleet.version))
        log.warning(
            "chaos: killed %s at %.1fs (kill %d of %d)",
            target,
            self._now(),
            len(self.kills),
            self.cfg.kills,
        )

    def _now(self) -> float:
        return time.monotonic() - self.started


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(POLL_S)


def report(
    chaos: ChaosConfig,
    cfg: Config,
    driver: ChaosDriver,
    state: Any,
    wall_s: float,
    error: str | None,
) -> dict[str, Any]:
    books = (
        accounts(state.ledger, state.audit, cfg.buffer.replay_ratio)
        if state is not None and state.audit is not None
        else None
    )
    steps_done = len(state.history) if state is not None else 0
    problems = verdict(books, driver.kills, chaos.kills, steps_done, cfg.trainer.total_steps, error)
    ledger = None
    if books is not None:
        ledger = {
            "counts": books.counts,
            "produced": books.produced,
            "trained": books.trained,
            "unaccounted": len(books.unaccounted),
            "overdue": len(books.overdue),
            "trained_beyond_reuse_limit": len(books.over_reused),
            "trained_more_than_once": books.trained_more_than_once,
            "replay_ratio": cfg.buffer.replay_ratio,
            "balanced": books.balanced,
        }
    return {
        "passed": not problems,
        "problems": problems,
        "chaos": asdict(chaos),
        "run_dir": cfg.logger.run_dir,
        "wall_s": round(wall_s, 1),
        "steps": {"done": steps_done, "total": cfg.trainer.total_steps},
        "ledger": ledger,
        "kills_by_target": dict(Counter(k.kind for k in driver.kills)),
        "kills": [asdict(k) for k in driver.kills],
    }


def print_report(summary: dict[str, Any]) -> None:
    print("\n== chaos report ==")
    print(
        f"run dir: {summary['run_dir']}   wall: {summary['wall_s']:.0f}s   "
        f"steps: {summary['steps']['done']}/{summary['steps']['total']}"
    )
    ledger = summary["ledger"]
    if ledger:
        print("ledger: " + ", ".join(f"{s}={n}" for s, n in ledger["counts"].items()))
        print(
            f"  produced={ledger['produced']} trained={ledger['trained']} "
            f"unaccounted={ledger['unaccounted']} overdue={ledger['overdue']} "
            f"trained_beyond_reuse_limit={ledger['trained_beyond_reuse_limit']} "
            f"(replay_ratio={ledger['replay_ratio']}) balanced={ledger['balanced']}"
        )
    print(f"kills: {len(summary['kills'])} {summary['kills_by_target']}")
    for kill in summary["kills"]:
        after = kill["recovered_after_s"]
        took = f"recovered in {after:5.1f}s" if after is not None else "no recovery"
        where = f"{kill['at_s']:6.1f}s  {kill['target']:<15} v{kill['version']:<4}"
        print(f"  {where} {took}: {kill['how']}")
    print("PASSED" if summary["passed"] else "FAILED:\n  " + "\n  ".join(summary["problems"]))


def prune_checkpoints(run_dir: str) -> None:
    """Keep only the newest checkpoint: the others served the restores during the
    run (every few steps, ~13 MB each for the tiny model)."""
    import shutil

    keep = latest(run_dir)
    for directory in checkpoints_dir(run_dir).glob("step-*"):
        if keep is None or directory.name != keep.name:
            shutil.rmtree(directory, ignore_errors=True)


def compose(overrides: list[str]) -> Config:
    """The run's config: DEFAULT_OVERRIDES, then the command line's; the run
    directory defaults to runs/<date>/<time>-chaos."""
    from omegaconf import OmegaConf

    from core.compose import compose as compose_config
    from rollout.launch import check_overrides

    # Hydra's run directory is logger.run_dir's default; a later hydra.run.dir= or
    # logger.run_dir= on the command line wins.
    run_dir = "hydra.run.dir=runs/${now:%Y-%m-%d}/${now:%H-%M-%S}-chaos"
    overrides = [run_dir, *DEFAULT_OVERRIDES, *overrides]
    if problem := check_overrides(overrides):
        raise ConfigError(problem)
    cfg = compose_config(overrides)
    Path(cfg.logger.run_dir).mkdir(parents=True, exist_ok=True)
    yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    (Path(cfg.logger.run_dir) / "config.yaml").write_text(yaml)
    return cfg


def parse(argv: list[str]) -> tuple[ChaosConfig, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.chaos",
        description="A training run while random actors are killed; exit 1 on any "
        "unaccounted trajectory.",
        epilog="Anything else is a Hydra override of the run, e.g. trainer.total_steps=200.",
    )
    defaults = ChaosConfig()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--min-interval", type=float, default=defaults.min_interval_s)
    parser.add_argument("--max-interval", type=float, default=defaults.max_interval_s)
    parser.add_argument(
        "--targets",
        default=",".join(defaults.targets),
        help="comma-separated: rollout,pool,learner",
    )
    parser.add_argument("--recovery-timeout", type=float, default=defaults.recovery_timeout_s)
    args, overrides = parser.parse_known_args(argv)
    chaos = ChaosConfig(
        seed=args.seed,
        kills=args.kills,
        min_interval_s=args.min_interval,
        max_interval_s=args.max_interval,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        recovery_timeout_s=args.recovery_timeout,
    )
    # Deliberate kills must not trip the breakers meant for components that keep failing.
    return chaos, [f"supervisor.max_restarts={max(3, chaos.kills + 1)}", *overrides]


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        chaos, overrides = parse(argv)
        plan(chaos)
        cfg = compose(overrides)
    except ConfigError as exc:
        print(f"asyncrl chaos: config error: {exc}", file=sys.stderr)
        return 2
    from orchestrator.run import run

    driver = ChaosDriver(chaos, cfg.logger.run_dir)
    started = time.perf_counter()
    state, error = None, None
    try:
        state = asyncio.run(run(cfg, alongside=driver))
    except Exception as exc:  # noqa: BLE001 - reported as the verdict, not a stack trace only
        log.exception("chaos run failed")
        error = f"{type(exc).__name__}: {exc}"
    summary = report(chaos, cfg, driver, state, time.perf_counter() - started, error)
    (Path(cfg.logger.run_dir) / "chaos.json").write_text(json.dumps(summary, indent=2))
    prune_checkpoints(cfg.logger.run_dir)
    print_report(summary)
    print(f"report: {Path(cfg.logger.run_dir) / 'chaos.json'}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main(sys.argv[1:]))
