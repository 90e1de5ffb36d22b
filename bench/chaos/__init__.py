"""Chaos: a normal training run while a driver kills its actors, then a verdict.

`python -m bench.chaos [--seed N] [--kills N] [overrides...]` (`make chaos`)
launches the run exactly as `rollout.launch` does (`orchestrator.run.run`), with
a `ChaosDriver` beside the training loop. The driver kills, with
`ray.kill(actor, no_restart=True)`, a rollout worker, an env pool or a learner
rank, one at a time, per a schedule drawn from the seed; after each kill it waits
(bounded) until the run has recovered on its own before the next delay starts:

- rollout worker: the supervisor replaces it under the same id, loaded with the
  current weights;
- env pool: the producer replaces it and re-runs the groups that were on it;
- learner rank: the next learner call fails, new ranks are started restored from
  the newest checkpoint and the call is retried (the driver waits for a first
  checkpoint before it kills the learner, so there is one).

At the end it prints and writes `<run_dir>/chaos.json` (the ledger, the kills,
the problems); the exit code is 1 when there is any. A test harness, not part of
the product: it lives in bench/ and the control plane knows nothing of it.

- `bench.chaos.schedule`: the kill schedule drawn from the seed;
- `bench.chaos.driver`: the driver and its record of each kill;
- `bench.chaos.verdict`: the final accounting (the ledger's own audit) and report;
- `bench.chaos.__main__`: the command line, the run's default overrides, the run.
"""
