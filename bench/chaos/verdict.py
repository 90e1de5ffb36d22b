"""The chaos run's verdict: the final ledger held to the producer's records, the
kills, and what went wrong, as `<run_dir>/chaos.json` and a printed report.

The audit itself (what is unaccounted or overdue) is the ledger's
(`orchestrator.ledger.audit`, the check behind the run's `ledger/unaccounted`
metric); this module adds what only a whole run can show: reuse beyond
`buffer.replay_ratio`, unfinished steps, missing or unrecovered kills.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from bench.chaos.driver import ChaosDriver, Kill
from bench.chaos.schedule import ChaosConfig
from core.config import Config
from orchestrator.ledger import Audit, Ledger


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


def accounts(ledger_state: dict[str, Any], audit: Audit, replay_ratio: int) -> Accounts:
    """The final ledger (`Ledger.state()`) counted by the ledger itself, what `audit`
    (taken with it) found, and who was trained more than `replay_ratio` times."""
    ledger = Ledger(replay_ratio)
    ledger.restore(ledger_state)
    times = ledger.times_trained
    return Accounts(
        counts=ledger.counts(),
        produced=len(ledger.states),
        trained=sum(1 for n in times.values() if n > 0),
        unaccounted=sorted(audit.unaccounted),
        overdue=sorted(audit.overdue),
        over_reused=sorted(t for t, n in times.items() if n > replay_ratio),
        trained_more_than_once=int(ledger.stats()["ledger/trained_more_than_once"]),
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
