"""From overrides to a checked Config: Hydra's composition against conf/, and the rules
the schema's types cannot state.

`compose(overrides)` is what launch's override check, the chaos run, the benchmarks
and the tests use to get the Config a run of `python -m rollout.launch <overrides>`
gets (`python -m rollout.launch` itself receives its config from `hydra.main` and
runs `validate` on it). The schemas and their choices are core.config's and
core.choices'; a value that is not one of a choice's members never gets here, Hydra
refuses it while composing. `validate` keeps the range and cross-field rules.
Hydra is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.choices import SpeculativeMethod

if TYPE_CHECKING:
    from core.config import Config

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
"""The config tree every composition starts from (`--config-dir` adds one before it)."""


class ConfigError(ValueError):
    """A config value is invalid; the message says which key and how to fix it."""


def compose(
    overrides: Sequence[str] = (),
    config_dir: str | None = None,
    config_name: str = "config",
    checked: bool = True,
) -> Config:
    """The Config of `python -m rollout.launch [--config-dir D] [--config-name N]
    <overrides>`: composed by Hydra as hydra.main composes it, structured (a bad
    key, type or choice raises Hydra's or OmegaConf's error, naming the key) and,
    when `checked`, validated (ConfigError). `${hydra:...}` interpolations resolve
    as in a run, so logger.run_dir is Hydra's run directory (runs/<date>/<time>)
    unless set; nothing is created on disk."""
    from hydra.types import RunMode

    hydra = _hydra(config_dir)
    raw = hydra.compose_config(
        config_name, list(overrides), run_mode=RunMode.RUN, with_log_configuration=False
    )
    cfg = _structured(raw)
    if checked:
        validate(cfg)
    return cfg


def _hydra(config_dir: str | None) -> Any:
    """A Hydra with the search path hydra.main builds (hydra/_internal/utils.py:
    create_config_search_path, and `--config-dir` prepended before the schema
    provider as in _run_hydra's add_conf_dir). Built as Hydra.create_main_hydra2
    builds it (hydra/_internal/hydra.py:56-69) but not installed as GlobalHydra, so
    a composition never collides with one a caller has initialised."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.errors import SearchPathException

    from core.config import register_configs

    register_configs()
    search_path = create_config_search_path(f"file://{CONF_DIR}")
    if config_dir is not None:
        directory = Path(config_dir).resolve()
        if not directory.is_dir():
            raise SearchPathException(f"Additional config directory '{directory}' not found")
        search_path.prepend(
            provider="command-line",
            path=f"file://{directory}",
            anchor=SearchPathQuery(provider="schema"),
        )
    return Hydra(task_name="launch", config_loader=ConfigLoaderImpl(search_path))


def _structured(raw: Any) -> Config:
    """`raw` (Hydra's composition, with its `hydra` node) as a Config object. As
    run_job does (hydra/core/utils.py:117-132), the run's output directory is the
    absolute hydra.run.dir and the hydra node is installed for the `hydra:` resolver,
    for this conversion only (the previous one is put back)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    with open_dict(raw.hydra.runtime):
        raw.hydra.runtime.output_dir = os.path.abspath(str(raw.hydra.run.dir))
    installed = HydraConfig.instance()
    previous = installed.cfg
    installed.set_config(raw)
    try:
        with open_dict(raw):
            del raw["hydra"]
        return OmegaConf.to_object(raw)
    finally:
        installed.cfg = previous


AT_LEAST = {
    "rollout.num_workers": 1,
    "rollout.gpus_per_worker": 0,
    "learner.gpus_per_rank": 0,
    "learner.num_ranks": 1,
    "trainer.total_steps": 1,
    "trainer.checkpoint_every": 0,
    "buffer.groups_per_batch": 1,
    "buffer.max_staleness": 0,
    "buffer.replay_ratio": 1,
    "env.max_group_reruns": 0,
    "env.breaker_window": 1,
    "algo.kl_coef": 0,
    "algo.overlong_buffer": 0,
    "algo.overlong_penalty": 0,
    "eval.every": 0,
    "eval.tasks": 0,
    "eval.samples": 1,
    "eval.temperature": 0,
    "curriculum.min_groups": 1,
    "curriculum.retry_unsolvable_epochs": 0,
}
"""Lower bounds: `key must be >= bound`."""


def validate(cfg: Config) -> None:
    """The first rule `cfg` breaks, as ConfigError; ranges and the fields that depend
    on each other (the schema has checked types and choices)."""
    for ok, message in _rules(cfg):
        if not ok:
            raise ConfigError(message)


def _rules(cfg: Config) -> Iterator[tuple[bool, str]]:
    for key, bound in AT_LEAST.items():
        yield attrgetter(key)(cfg) >= bound, f"{key} must be >= {bound}"
    algo, rollout, env = cfg.algo, cfg.rollout, cfg.env
    spec = rollout.speculative
    yield (
        spec.method != SpeculativeMethod.draft_model or bool(spec.draft_model),
        "rollout.speculative.method=draft_model needs rollout.speculative.draft_model=<path>",
    )
    yield algo.is_cap > 1.0, "algo.is_cap must be > 1"
    yield (
        algo.clip_ratio_c is None or algo.clip_ratio_c > 1.0,
        "algo.clip_ratio_c (dual-clip) must be > 1, or null to turn it off",
    )
    yield algo.log_ratio_clamp > 0.0, "algo.log_ratio_clamp must be > 0"
    yield (
        algo.overlong_buffer < (algo.overlong_max_tokens or rollout.max_tokens_per_turn),
        "algo.overlong_buffer must be below the turn limit it counts toward "
        "(algo.overlong_max_tokens, else rollout.max_tokens_per_turn)",
    )
    yield (
        rollout.top_p == 1.0,
        "rollout.top_p < 1 truncates the engine's sampling distribution, so its "
        "behavior logprobs are of the truncated distribution while the learner's are "
        "of the full one (temperature only): every off-policy correction would be "
        "biased. Set rollout.top_p=1",
    )
    yield (
        rollout.max_model_len is None or rollout.max_model_len >= 1,
        "rollout.max_model_len must be >= 1, or null for the model's own context length",
    )
    yield (
        cfg.supervisor.group_deadline_s > env.episode_timeout_s,
        "supervisor.group_deadline_s must be above env.episode_timeout_s: a pool times "
        "out its own episodes there, so a lower deadline declares slow groups lost",
    )
    yield 0.0 < cfg.balancer.decrease < 1.0, "balancer.decrease must be in (0, 1)"
    yield cfg.learner.zero_stage in (0, 1, 2, 3), "learner.zero_stage must be 0, 1, 2 or 3"
    yield from _placement_rules(cfg)
    yield env.group_size >= 2, "env.group_size must be >= 2 (GRPO normalises within groups)"
    yield (
        0.0 <= env.breaker_failure_rate <= 1.0,
        "env.breaker_failure_rate must be in [0, 1] (1 turns the breaker off)",
    )
    yield (
        isinstance(env.kwargs, dict),
        "env.kwargs must be a mapping of the env's arguments: env.kwargs={name: value}",
    )
    yield from _eval_rules(cfg)
    tiny = cfg.model.tiny
    yield (
        tiny.architecture != "idefics3" or tiny.num_experts == 0,
        "model.tiny.architecture=idefics3 builds a dense vision-language policy: set "
        "model.tiny.num_experts=0",
    )


def _eval_rules(cfg: Config) -> Iterator[tuple[bool, str]]:
    ev = cfg.eval
    yield (
        bool(ev.pass_k) and all(1 <= k <= ev.samples for k in ev.pass_k),
        f"eval.pass_k={list(ev.pass_k)}: each k must be between 1 and eval.samples="
        f"{ev.samples} (pass@k is estimated from that many samples per task)",
    )
    yield (
        ev.temperature > 0 or ev.samples == 1,
        "eval.temperature=0 is greedy: every sample of a task would be the same; use "
        "eval.samples=1, or a temperature > 0 for pass@k",
    )
    yield (
        isinstance(ev.env_kwargs, dict),
        "eval.env_kwargs must be a mapping of env arguments: eval.env_kwargs={split: eval}",
    )


def _placement_rules(cfg: Config) -> Iterator[tuple[bool, str]]:
    rollout_gpus, rank_gpus = cfg.rollout.gpus_per_worker, cfg.learner.gpus_per_rank
    yield (
        rank_gpus <= 1,
        "learner.gpus_per_rank must be 0 (CPU) or 1: a DeepSpeed rank drives one GPU "
        "(add ranks with learner.num_ranks instead)",
    )
    yield (
        cfg.placement != "colocated" or rollout_gpus == rank_gpus <= 1,
        "placement=colocated shares each GPU between a rollout worker and a learner rank: "
        "rollout.gpus_per_worker and learner.gpus_per_rank must both be 1 (or both 0 on CPU)",
    )
    yield (0 <= cfg.rollout.sleep_level <= 2, "rollout.sleep_level must be 0, 1 or 2 (vLLM's)")
    yield (
        cfg.placement != "colocated"
        or cfg.rollout.sleep_level == 0
        or rollout_gpus == 0
        or cfg.trainer.mode == "sync",
        "placement=colocated puts vLLM to sleep while the learner steps, so nothing can "
        "generate then: use trainer.mode=sync (or rollout.sleep_level=0 to keep both awake)",
    )
