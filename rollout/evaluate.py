"""Direct evaluation of a saved policy: a config's held-out tasks on one in-process
vLLM engine (no Ray, no learner), planned and scored as the in-run evaluator does
(core.evaluation), so both give the same numbers for the same weights and seeds.

    python -m rollout.evaluate runs/<date>/<time>            # a run's final_model,
                                                             # with the run's overrides
    python -m rollout.evaluate path/to/policy env=dataset eval.tasks=200 [overrides]

It prints the eval/* metrics as JSON on stdout. Like rollout.launch, it is a
command-line entry point, so it reads the command line with orchestrator.cli.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from core.chat import ChatCodec, load_tokenizer
from core.config import Config
from core.evaluation import EvalTask, held_out_kwargs, plan, summarize
from core.types import Trajectory
from envs import make_env
from rollout.agent import Served, episode_spec, run_episode
from rollout.engine import Engine, SamplingSpec

GENERATE_TIMEOUT_S = 600.0


async def evaluate_policy(
    model_path: str, cfg: Config, version: int = 0
) -> tuple[dict[str, float], list[list[Trajectory]]]:
    """Evaluate the policy at `model_path` on `cfg`'s held-out tasks (its episodes
    are named as those of an evaluation of `version`); the eval/* metrics and, per
    task, its episodes."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.rollout.kv_cache_gib))
    probe = make_env(cfg.env.id, cfg.env.kwargs)
    kwargs = held_out_kwargs(cfg, probe)
    probe.close()
    held_out = make_env(cfg.env.id, kwargs)
    num_tasks = getattr(held_out, "num_tasks", None)
    codec = ChatCodec(load_tokenizer(model_path), getattr(held_out, "tool_schemas", None))
    held_out.close()
    engine = Engine(model_path, cfg.rollout, cfg.model.dtype, cfg.trainer.seed)
    await engine.start()
    try:
        tasks = plan(cfg, version, num_tasks)
        runs = [_run_task(engine, codec, cfg, kwargs, task) for task in tasks]
        episodes = list(await asyncio.gather(*runs))
    finally:
        engine.shutdown()
    return summarize(episodes, cfg.env.success_reward, cfg.eval.pass_k), episodes


async def _run_task(
    engine: Engine, codec: ChatCodec, cfg: Config, kwargs: dict[str, Any], task: EvalTask
) -> list[Trajectory]:
    async def generate(
        prompt_ids: list[int], sampling: SamplingSpec, images: list[bytes] | None = None
    ) -> Served:
        generation = await engine.generate(prompt_ids, sampling, GENERATE_TIMEOUT_S, images)
        return Served(generation, "direct")

    group_id = task.episode_ids[0].rsplit("/", 1)[0]
    episodes = []
    for trajectory_id in task.episode_ids:
        env = make_env(cfg.env.id, kwargs)
        spec = episode_spec(
            cfg.rollout, cfg.env.id, trajectory_id, group_id, task.seed, cfg.eval.temperature
        )
        episodes.append(run_episode(env, codec, generate, spec))
    return list(await asyncio.gather(*episodes))


def _policy_and_overrides(argv: list[str]) -> tuple[str, list[str]]:
    """A run directory gives its final_model and the overrides it was launched with;
    anything else is a policy directory."""
    if not argv:
        raise SystemExit("usage: python -m rollout.evaluate <run dir | policy dir> [overrides]")
    target, overrides = Path(argv[0]), argv[1:]
    if (target / "final_model").is_dir():
        saved = target / ".hydra" / "overrides.yaml"
        import yaml

        launched = yaml.safe_load(saved.read_text()) if saved.is_file() else []
        return str(target / "final_model"), list(launched or []) + overrides
    return str(target), overrides


def main(argv: list[str]) -> None:
    from core.compose import compose
    from orchestrator.cli import normalize

    model_path, overrides = _policy_and_overrides(argv)
    cfg = compose(normalize(overrides + [f"model.path={model_path}"]))
    metrics, _ = asyncio.run(evaluate_policy(model_path, cfg))
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(sys.argv[1:])
