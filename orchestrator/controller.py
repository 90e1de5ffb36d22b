"""The controller: the training loop, asynchronous by default.

    start producing groups and supervising the workers (orchestrator.assembly)
    for each step:
        take a batch of fresh complete groups from the buffer
        (colocated: put vLLM to sleep; the publish below wakes it)
        train one step on it (on CPU, async: with the engines' cores once they idle)
        wait until the previous version reached every rollout worker
        (evaluation due: evaluate that version, pinned there, beside training)
        export the new weights and start publishing them (after the evaluation)
        observe: metrics, the ledger, and the balancer's in-flight limit
        every N steps, checkpoint
        log
    evaluate the last version

Rollouts never wait for the learner except as the staleness gate requires:
a group may start only while (groups started and not dropped) stays within
(version + max_staleness + 1) batches. With `trainer.mode=sync` the gate is 0
versions wide, which makes the same loop generate, train, publish in turn (and
a publish finishes before the next step instead of overlapping it).
"""

from __future__ import annotations

from collections.abc import Callable

from core.config import Config
from core.metrics import MetricsLogger
from core.types import Batch
from orchestrator.assembly import Run, RunState
from orchestrator.checkpoint import ControllerState
from orchestrator.curriculum import TaskCounts
from orchestrator.summaries import trained_records
from orchestrator.system import System

Progress = Callable[[int, dict[str, float]], None]


async def train(
    system: System,
    cfg: Config,
    logger: MetricsLogger,
    progress: Progress | None = None,
    resume: ControllerState | None = None,
    tasks: TaskCounts | None = None,
) -> RunState:
    run = Run.assemble(system, cfg, resume, tasks)
    state, learner, fleet = run.state, system.learner, system.fleet
    try:
        first_step = state.step
        for step in range(first_step, cfg.trainer.total_steps):
            state.step = step
            groups, learner_wait_s = await run.next_batch()
            batch = Batch(groups, state.version)
            metrics = await fleet.sleep()  # colocated: vLLM frees the devices it shares
            metrics |= await learner.train_step(batch, engines_idle=run.engines_idle)
            run.ledger.trained(groups)
            state.trained.extend(trained_records(batch))
            metrics |= await fleet.synced()  # the previous version is everywhere
            await run.evaluate_if_due(first=step == first_step)
            snapshot = await learner.export_weights(state.version + 1)
            metrics |= await fleet.publish(snapshot, background=run.overlap)
            state.version += 1
            metrics |= await run.observe(groups, batch.learner_version, learner_wait_s)
            if run.checkpoint_due(step):
                metrics |= await run.checkpoint()
            logger.log(step, metrics)
            for evaluation in run.finished_evaluations():
                logger.log(step, evaluation)
            state.history.append(metrics)
            if progress is not None:
                progress(step, metrics)
        await run.finish()
        for evaluation in await run.final_evaluations():
            logger.log(cfg.trainer.total_steps, evaluation)
    finally:
        run.cancel()
    return state
