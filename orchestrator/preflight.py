"""Everything about a run that can be checked before an actor starts, checked then.

A checkpoint and an env that do not fit each other used to fail ~20 s into
start-up, inside actors, with restarts and pages of tracebacks. `preflight`
finds the same problems in the driver, in seconds, each as one line that says
what is wrong and what to do (ConfigError / EnvConfigError):

- the policy directory (`resolve_policy`: a checkpoint, or the tiny one built once);
- its context length: `rollout.max_model_len` above the model's own is refused,
  None takes the model's own capped at AUTO_MAX_MODEL_LEN;
- its tokenizer: a chat template (`model.chat_template=` supplies one), an eos
  token that is one token and ends the template's assistant turns, and, for an
  env with tools, tool-call markup that survives decoding;
- the env: built with its kwargs, text-only (the learner trains on text), and
  one probe episode (reset, then one step with a plain answer): chat messages as
  observations, a prompt that leaves room to generate, a finite number as reward.

Why a probe and not "the first failures are fatal": the probe runs in the
user's own process before anything starts, so an env that fails on every episode
shows its own first traceback at once, not four pool restarts later, and it
needs nothing from the pools or the supervisor. An env that fails only on some
episodes (a flaky tool) passes it; the env circuit breaker handles those.
"""

from __future__ import annotations

import asyncio
import json
import math
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootstrap.policy import resolve_policy
from core.chat import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ChatCodec, ChatTemplateError, load_tokenizer
from core.config import AUTO_MAX_MODEL_LEN, Config, ConfigError
from envs import EnvConfigError, astep, make_env
from orchestrator.curriculum import TaskCounts, task_counts
from rollout.engine_args import (
    EngineUnsupported,
    check_linear_attention_dtype,
    check_linear_attention_speculation,
)

PROBE_SEED = 0
PROBE_ACTION = "I do not know."
"""The probe step's assistant message: a plain answer, no tool call."""
LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
"""The config.json keys vLLM derives a model's length from, smallest wins
(vllm/transformers_utils/model_arch_config_convertor.py:396-420)."""
UNSCALED_ROPE = ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling")
"""RoPE types whose `factor` vLLM does not multiply in (vllm/config/model.py:2593-2605)."""


class EnvProbeError(EnvConfigError):
    """The env raised in its probe episode; `details` is its traceback."""

    def __init__(self, message: str, details: str):
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class Preflight:
    """What the checks settled: the policy directory and the context length."""

    model_path: str
    max_model_len: int
    tasks: TaskCounts


def preflight(cfg: Config) -> Preflight:
    """Run every check (module docstring); raises ConfigError or EnvConfigError."""
    model_path = resolve_policy(cfg.model)
    max_model_len = context_length(cfg.rollout.max_model_len, model_context_length(model_path))
    try:
        check_linear_attention_dtype(model_path, cfg.model.dtype, cfg.rollout.gpus_per_worker)
        check_linear_attention_speculation(
            model_path, cfg.rollout.speculative.method, cfg.rollout.gpus_per_worker
        )
    except EngineUnsupported as exc:
        raise ConfigError(str(exc)) from exc
    env = make_env(cfg.env.id, cfg.env.kwargs)
    check_trainable(env, model_path)
    try:
        codec = chat_codec(model_path, getattr(env, "tool_schemas", None), cfg.model.path)
        probe_env(env, codec, max_model_len, cfg.env.id)
    finally:
        env.close()
    return Preflight(model_path, max_model_len, task_counts(cfg))


def check_trainable(env: Any, model_path: str) -> None:
    """Refuse an env whose observations the policy cannot read: images for a
    text-only model (a checkpoint whose config has no `vision_config`)."""
    from envs.base import shows_images

    if shows_images(env) and "vision_config" not in _read_json(Path(model_path) / "config.json"):
        raise EnvConfigError(
            f"{env.spec.id if env.spec else type(env).__name__} shows images, and the policy "
            f"at {model_path} reads text only; use a vision-language policy (model=tiny_vl, "
            "or model.path=<a vision-language checkpoint>)"
        )


def model_context_length(model_path: str) -> int | None:
    """The longest context the checkpoint supports, derived as vLLM derives it
    (config keys, the tokenizer's model_max_length, RoPE scaling); None if unknown."""
    config = _read_json(Path(model_path) / "config.json")
    text = config.get("text_config") or config
    found = [int(text[key]) for key in LENGTH_KEYS if isinstance(text.get(key), int | float)]
    if not found:
        return None
    length = min(found)
    tokenizer_max = _read_json(Path(model_path) / "tokenizer_config.json").get("model_max_length")
    if isinstance(tokenizer_max, int | float) and tokenizer_max < length:
        length = int(tokenizer_max)
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    if isinstance(rope, Mapping) and isinstance(rope.get("factor"), int | float):
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind not in UNSCALED_ROPE:
            length = int(length * rope["factor"])
    return length


def context_length(requested: int | None, model_len: int | None) -> int:
    """rollout.max_model_len as the run will use it (see RolloutConfig.max_model_len)."""
    if requested is None:
        return min(AUTO_MAX_MODEL_LEN, model_len) if model_len else AUTO_MAX_MODEL_LEN
    if model_len is not None and requested > model_len:
        raise ConfigError(
            f"rollout.max_model_len={requested} is above the model's own context length "
            f"({model_len} positions): set rollout.max_model_len={model_len} or less, or "
            "leave it unset (null: the model's own)"
        )
    return requested


def chat_codec(model_path: str, tools: list[dict] | None, user_path: str | None) -> ChatCodec:
    """The codec the env pools will build, and the tokenizer checks they depend on."""
    tokenizer = load_tokenizer(model_path)
    where = f"model.path={user_path}" if user_path else "the tiny policy"
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"{where} has no chat template (chat_template.jinja or tokenizer_config.json): "
            "set model.chat_template=qwen (ChatML with Hermes tool calls) or "
            "model.chat_template=/path/to/template.jinja"
        )
    try:
        codec = ChatCodec(tokenizer, tools)
    except ChatTemplateError as exc:
        raise ConfigError(f"{where}: {exc}; {_TOKEN_ADVICE}") from exc
    check_special_tokens(codec, bool(tools), where)
    return codec


_TOKEN_ADVICE = (
    "the tokenizer needs the template's end-of-turn token as one token and as its "
    "eos_token (tokenizer.add_special_tokens, then resize the model's embeddings), or a "
    "template (model.chat_template=) that ends turns with the tokenizer's eos"
)


def check_special_tokens(codec: ChatCodec, has_tools: bool, where: str) -> None:
    """The eos token must be a single token (the engine stops on its id), and for
    an env with tools the tool-call tags must survive decoding (the parser reads them)."""
    eos = codec.tokenizer.eos_token
    if codec.encode(eos) != [codec.tokenizer.eos_token_id]:
        raise ConfigError(
            f"{where}: the eos token {eos!r} is not one token of the tokenizer; {_TOKEN_ADVICE}"
        )
    markup = f"{TOOL_CALL_OPEN}\n{{}}\n{TOOL_CALL_CLOSE}"
    if has_tools and codec.decode(codec.encode(markup)) != markup:
        raise ConfigError(
            f"{where}: the tokenizer drops {TOOL_CALL_OPEN} / {TOOL_CALL_CLOSE} when decoding "
            "(special tokens), so tool calls could never be parsed: add them as normal tokens "
            "(tokenizer.add_tokens), or pick an env without tools"
        )


def probe_env(env: Any, codec: ChatCodec, max_model_len: int, env_id: str) -> None:
    """One reset and one step, checked against what the agent loop needs."""
    observation, _ = _call(env_id, f"reset(seed={PROBE_SEED})", env.reset, seed=PROBE_SEED)
    prompt = _render(env_id, "reset", observation, codec.prompt)
    if len(prompt.ids) >= max_model_len:
        raise EnvConfigError(
            f"{env_id}: its first prompt is {len(prompt.ids)} tokens, and "
            f"rollout.max_model_len={max_model_len} leaves no room to generate: shorten the "
            "prompt (env.kwargs) or use a model with a longer context"
        )
    result = _call(env_id, "step", lambda: asyncio.run(astep(env, PROBE_ACTION)))
    if not (isinstance(result, tuple) and len(result) == 5):
        raise EnvConfigError(
            f"{env_id}: step() must return (observation, reward, terminated, truncated, info), "
            f"got {type(result).__name__}"
        )
    observation, reward, terminated, truncated, _ = result
    if not _is_finite_number(reward):
        raise EnvConfigError(
            f"{env_id}: step() returned reward {reward!r}; the learner needs a finite number "
            "(sum a reward's components into one float; keep the parts in info)"
        )
    if not (terminated or truncated):
        _render(env_id, "step", observation, codec.observation)


def _call(env_id: str, what: str, function: Any, **kwargs: Any) -> Any:
    try:
        return function(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure of the env's own code
        raise EnvProbeError(
            f"{env_id}: {what} raised {type(exc).__name__}: {exc} in its probe episode, so it "
            "would fail every episode (its traceback is above)",
            traceback.format_exc(),
        ) from exc


def _render(env_id: str, what: str, observation: Any, render: Any) -> Any:
    if not _is_messages(observation):
        raise EnvConfigError(
            f"{env_id}: {what}() returned {type(observation).__name__} as observation; the "
            "agent loop needs chat messages: a list of {'role': ..., 'content': ...} dicts"
        )
    try:
        return render(list(observation))
    except ChatTemplateError as exc:
        raise EnvConfigError(f"{env_id}: its {what} messages do not render: {exc}") from exc


def _is_messages(observation: Any) -> bool:
    return (
        isinstance(observation, Sequence)
        and not isinstance(observation, str)
        and all(isinstance(m, Mapping) and {"role", "content"} <= set(m) for m in observation)
    )


def _is_finite_number(value: Any) -> bool:
    try:
        return not isinstance(value, bool | str) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
