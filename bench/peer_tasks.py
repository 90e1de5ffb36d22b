"""The tasks both sides of bench.peer train on, from asyncrl's own environment: the
opening of a task seed (the env's messages; rendered in the policy's chat template as
asyncrl's engine renders them: core.chat.ChatCodec), the score of a completion (the
env's own reward for the assistant turns replayed through it), and greedy accuracy on
held-out tasks (the env driving every turn, tool calls answered by its own tools).
Imports neither TRL nor Ray.
"""

from __future__ import annotations

import json
from typing import Any

from core.chat import ChatCodec
from envs import make_env
from envs.base import dumps_call

LATENCY_KEYS = ("tool_latency_s", "tool_slow_rate", "tool_slow_latency_s")
"""Env kwargs that only slow its tools down: scoring and evaluation replay without them
(the trained side already paid the latency where it generated)."""


def instant(env: dict[str, Any]) -> dict[str, Any]:
    """`env` with its tools answering at once."""
    kwargs = {k: v for k, v in env["kwargs"].items() if k not in LATENCY_KEYS}
    return {"id": env["id"], "kwargs": kwargs}


def opening(env: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The messages task `seed` opens with (system and user turns)."""
    messages, _ = make_env(env["id"], env["kwargs"]).reset(seed=seed)
    return [dict(m) for m in messages]


def prompts(policy: str, env: dict[str, Any], seeds: list[int]) -> list[str]:
    """The rendered opening prompt of each task seed."""
    from transformers import AutoTokenizer

    made = make_env(env["id"], env["kwargs"])
    codec = ChatCodec(AutoTokenizer.from_pretrained(policy), made.tool_schemas)
    rendered = []
    for seed in seeds:
        messages, _ = made.reset(seed=seed)
        rendered.append(codec.render(messages, add_generation_prompt=True))
    return rendered


def replay(env: dict[str, Any], seed: int, turns: list[str]) -> tuple[float, bool]:
    """(reward, correct) of task `seed` when the assistant says `turns` in order: the
    env's own reward and its `correct` part. Turns after the episode ended are ignored;
    an episode the turns leave unfinished (the last one called a tool) scores 0."""
    made = make_env(env["id"], instant(env)["kwargs"])
    made.reset(seed=seed)
    for text in turns:
        _, reward, terminated, truncated, info = made.step(text)
        if terminated or truncated:
            return float(reward), (info.get("reward_components") or {}).get("correct", 0.0) > 0
    return 0.0, False


def assistant_turns(completion: list[dict[str, Any]]) -> list[str]:
    """The text of each assistant turn of a multi-turn completion given as messages
    (TRL's: content plus structured `tool_calls`), tool calls written back in the
    env's format (envs.base.dumps_call)."""
    turns = []
    for message in completion:
        if message.get("role") != "assistant":
            continue
        calls = []
        for call in message.get("tool_calls") or []:
            function = call.get("function", call)
            arguments = function.get("arguments") or {}
            if isinstance(arguments, str):
                arguments = json.loads(arguments)
            calls.append(dumps_call(function["name"], arguments))
        turns.append("\n".join([message.get("content") or "", *calls]).strip())
    return turns


def solved(policy: str, env: dict[str, Any], seeds: list[int], max_new_tokens: int) -> list[bool]:
    """Whether greedy decoding of `policy` answers each task right, every episode run
    to its end by the env (tool calls answered, at most `max_new_tokens` per turn):
    the tasks' turns are batched, one generate call per turn."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32).eval()
    episodes = {seed: make_env(env["id"], instant(env)["kwargs"]) for seed in seeds}
    for seed, made in episodes.items():
        made.reset(seed=seed)
    codec = ChatCodec(tokenizer, next(iter(episodes.values())).tool_schemas)
    right = dict.fromkeys(seeds, False)
    while episodes:
        texts = [codec.render(m.messages, add_generation_prompt=True) for m in episodes.values()]
        replies = _greedy(model, tokenizer, texts, max_new_tokens)
        for (seed, made), reply in zip(list(episodes.items()), replies, strict=True):
            _, _, terminated, truncated, info = made.step(reply)
            if terminated or truncated:
                right[seed] = (info.get("reward_components") or {}).get("correct", 0.0) > 0
                del episodes[seed]
    return [right[seed] for seed in seeds]


def _greedy(model: Any, tokenizer: Any, texts: list[str], max_new_tokens: int) -> list[str]:
    """Each text's greedy continuation up to its end of turn (the tokenizer's eos)."""
    import torch

    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    replies = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        replies.append(tokenizer.decode(row, skip_special_tokens=True))
    return replies
