"""Rollout-plane benchmark: ratios measured side by side in one run (not a test).

    python -m bench.rollout [--episodes 32] [--model PATH] [--json PATH]
    python -m bench.rollout --hybrid [--json PATH]

1. agent loop vs raw vLLM: generated tokens/s of asyncrl's multi-turn agent loop
   (run_episode over an Engine: env steps, chat codec, trajectory building)
   against vLLM's AsyncLLM.generate fed the very turn prompts the agent loop
   issued, with the same structure (episodes concurrent, each episode's turns
   in order), same engine, greedy so both produce the same tokens. For the
   record also raw vLLM with every turn submitted at once.
2. speculation: decode tokens/s with ngram speculation on vs off, on prompts
   whose continuation echoes the prompt (an opened tool call whose expression
   must be copied from the question), at one request in flight (latency-bound
   decoding, where drafts pay off) and at eight; with the acceptance rate, the
   mean accepted length, and what a drafting step costs in plain decode steps
   (the verify cost that caps the gain on CPU).
   `--hybrid`: only this section, on the tiny Qwen3.5 policy (`model=tiny_qwen35`,
   bf16 engines: vLLM's CPU linear attention is bf16 only), with MTP drafts (its own
   MTP layer, one token per step) against no speculation; ngram is listed as refused
   (vLLM's CPU linear-attention kernel fails on its drafts).
3. placement: two engines, requests with long-tailed lengths arriving over
   time; the Router's least-outstanding-tokens placement against round robin:
   token skew (max/mean per worker) and the time to finish everything
   (both policies run twice, alternating, after a warm-up; means reported).

`--json PATH` also writes the numbers behind every printed line (bench.record).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.preamble import environment, parser, policy
from bench.record import write_json
from core.chat import ChatCodec
from core.config import RolloutConfig, SpeculativeConfig
from envs import make_env
from envs.calculator import CalculatorEnv
from rollout.agent import EpisodeSpec, Served, run_episode
from rollout.engine import Engine, SamplingSpec
from rollout.router import Router, placement_skew

MAX_MODEL_LEN = 1024
TURN_TOKENS = 64


@dataclass
class Rate:
    tokens: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.tokens / self.seconds


def main() -> None:
    args = _parse()
    environment(vllm=True)
    model = _hybrid_policy() if args.hybrid else policy(args.model)
    codec = _codec(model)
    values: dict[str, float] = {}
    if args.hybrid:
        rows = asyncio.run(_speculation_rows(model, codec, HYBRID_METHODS, "bfloat16", values))
        rows.append(("ngram spec", "refused on this model on CPU (see HYBRID_METHODS)"))
    else:
        rows = asyncio.run(_all(model, codec, args.episodes, values))
    print(f"\nrollout benchmark ({model})")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    write_json(args.json, "rollout", {"model": model, "episodes": args.episodes, **values})


async def _all(
    model: str, codec: ChatCodec, episodes: int, values: dict[str, float]
) -> list[tuple[str, str]]:
    """The printed rows; `values` receives the numbers behind them."""
    rows: list[tuple[str, str]] = []
    engine = await _engine(model, core=0)
    try:
        agent, raw, burst = await _agent_vs_raw(engine, codec, episodes)
        values |= {
            "agent_tokens_per_s": agent.per_s,
            "raw_tokens_per_s": raw.per_s,
            "agent_over_raw": agent.per_s / raw.per_s,
            "raw_burst_tokens_per_s": burst.per_s,
            "agent_tokens": float(agent.tokens),
            "agent_seconds": agent.seconds,
            "raw_seconds": raw.seconds,
        }
        rows += [
            ("agent loop tokens/s", f"{agent.per_s:.0f}"),
            ("raw vLLM generate tokens/s, same turn order", f"{raw.per_s:.0f}"),
            ("agent loop / raw", f"{agent.per_s / raw.per_s:.2f}x  (goal >= 0.9x)"),
            ("raw vLLM, all turns at once (for the record)", f"{burst.per_s:.0f}"),
        ]
    finally:
        engine.shutdown()
    rows += await _speculation_rows(model, codec, {"ngram": 4}, "float32", values)
    rows += await _placement(model, values)
    return rows


HYBRID_METHODS = {"mtp": 1}
"""Speculation on the hybrid policy, with its draft tokens per step (its one MTP layer
drafts one). Not ngram: it kills vLLM 0.32's CPU engine on a linear-attention model
(rollout.engine_args.check_linear_attention_speculation), so runs refuse it."""


async def _speculation_rows(
    model: str, codec: ChatCodec, methods: dict[str, int], dtype: str, values: dict[str, float]
) -> list[tuple[str, str]]:
    """Decode tokens/s of each speculation method over none, and its acceptance."""
    off, on, stats = await _speculation(model, codec, methods, dtype)
    rows: list[tuple[str, str]] = []
    for method in methods:
        prefix = "spec" if method == "ngram" else f"spec_{method}"
        for n in (1, 8):
            rate, base = on[method][n].per_s, off[n].per_s
            values |= {
                f"{prefix}_on_tokens_per_s_{n}": rate,
                f"{prefix}_off_tokens_per_s_{n}": base,
                f"{prefix}_on_over_off_{n}": rate / base,
            }
            goal = "  (goal >= 1.5x)" if method == "ngram" else ""
            rows.append(
                (
                    f"{method} spec on/off decode tokens/s, {n} in flight",
                    f"{rate:.0f} / {base:.0f} = {rate / base:.2f}x{goal}",
                )
            )
        seen = stats[method]
        acceptance = seen.spec_accepted / max(1, seen.spec_drafted)
        length = 1 + seen.spec_accepted / max(1, seen.spec_steps)
        rows.append(
            (
                f"{method} acceptance rate / mean accepted length",
                f"{acceptance:.2f} / {length:.2f} tokens per step",
            )
        )
        values[f"{prefix}_acceptance_rate"] = acceptance
        values[f"{prefix}_mean_accepted_length"] = length
        verify = _verify_cost(length, on[method][1].per_s, off[1].per_s)
        rows.append(
            (
                f"{method} drafting step / plain decode step, 1 in flight (verify cost)",
                f"{verify:.2f}x the time, for {length:.2f} tokens",
            )
        )
        values[f"{prefix}_verify_over_decode_step_1"] = verify
    return rows


def _verify_cost(tokens_per_step: float, drafting_per_s: float, plain_per_s: float) -> float:
    """How many plain decode steps one drafting step (the target's forward over the
    last token and the drafts, plus drafting) costs, from one request's decode rates:
    (tokens_per_step / drafting_per_s) / (1 / plain_per_s). The speed-up is
    tokens_per_step / this; on a GPU a decode step is memory-bound and verifying a
    few more positions is nearly free, on these CPU cores each position is compute."""
    return tokens_per_step * plain_per_s / drafting_per_s


async def _speculation(
    model: str, codec: ChatCodec, methods: dict[str, int], dtype: str
) -> tuple[dict[int, Rate], dict[str, dict[int, Rate]], dict]:
    """Decode rates without and with each method's drafts: all engines up at once (on
    the same core, taking turns), measured alternately twice, summed."""
    prompts = _echo_prompts(codec, 16)
    plain = await _engine(model, core=0, dtype=dtype)
    drafting = {
        method: await _engine(model, core=0, speculative=method, tokens=tokens, dtype=dtype)
        for method, tokens in methods.items()
    }
    off: dict[int, Rate] = {}
    on: dict[str, dict[int, Rate]] = {method: {} for method in methods}
    try:
        for _ in range(2):
            for in_flight in (1, 8):
                engines = [(plain, off)] + [(drafting[m], on[m]) for m in methods]
                for engine, rates in engines:
                    rate = await _decode(engine, prompts, in_flight, codec)
                    seen = rates.get(in_flight, Rate(0, 0.0))
                    rates[in_flight] = Rate(seen.tokens + rate.tokens, seen.seconds + rate.seconds)
        return off, on, {m: engine.snapshot_stats() for m, engine in drafting.items()}
    finally:
        plain.shutdown()
        for engine in drafting.values():
            engine.shutdown()


ALTERNATIONS = 16
"""Agent-loop and raw runs alternate this many times (each from a cold prefix cache),
after one untimed run of each; the tiny policy's episodes are a few tokens long, so
one run is about 0.1 s and a single pair is noisy (at 4 pairs the ratio moved
0.71-0.92 between two calls in one process)."""


async def _agent_vs_raw(engine: Engine, codec: ChatCodec, episodes: int) -> tuple[Rate, Rate, Rate]:
    """The agent loop over `episodes` calculator episodes, recording each turn's
    prompt; then raw vLLM on those prompts, episode by episode, and all at once.
    Each episode slot keeps its env across runs, as an env pool keeps its idle envs
    (rollout/envpool.py `_episode`): making one is pool start-up, not the loop."""
    turns: dict[int, list[tuple[list[int], SamplingSpec]]] = {s: [] for s in range(episodes)}
    envs = [make_env("asyncrl/Calculator-v0") for _ in range(episodes)]
    recording = True

    async def episode(seed: int) -> int:
        async def generate(prompt_ids: list[int], spec: SamplingSpec) -> Served:
            if recording:  # greedy: every run of the loop issues the same turns
                turns[seed].append((list(prompt_ids), spec))
            return Served(await engine.generate(prompt_ids, spec, 300.0), "bench")

        spec = EpisodeSpec(f"b{seed}", "bench", "calc", seed, TURN_TOKENS, MAX_MODEL_LEN, 0.0)
        return (await run_episode(envs[seed], codec, generate, spec)).num_generated

    async def raw_episode(seed: int) -> int:
        return sum([await _raw(engine, prompt, spec) for prompt, spec in turns[seed]])

    await _warm_up(engine, codec)
    # untimed: the agent loop records its turns (and, first in the process, pays its
    # one-time costs: the env's and codec's first calls), then raw vLLM replays them
    await asyncio.gather(*[episode(s) for s in range(episodes)])
    recording = False
    await asyncio.gather(*[raw_episode(s) for s in range(episodes)])
    agents, raws = [], []
    for _ in range(ALTERNATIONS):  # alternate, each from a cold prefix cache
        await engine.llm.reset_prefix_cache()
        agents.append(await _timed(lambda: asyncio.gather(*[episode(s) for s in range(episodes)])))
        await engine.llm.reset_prefix_cache()
        raws.append(
            await _timed(lambda: asyncio.gather(*[raw_episode(s) for s in range(episodes)]))
        )
    every_turn = [turn for seed in range(episodes) for turn in turns[seed]]
    await engine.llm.reset_prefix_cache()
    burst = await _timed(lambda: asyncio.gather(*[_raw(engine, p, s) for p, s in every_turn]))
    agent = Rate(sum(r.tokens for r in agents), sum(r.seconds for r in agents))
    raw = Rate(sum(r.tokens for r in raws), sum(r.seconds for r in raws))
    return agent, raw, burst


async def _raw(engine: Engine, prompt_ids: list[int], spec: SamplingSpec) -> int:
    """vLLM's own AsyncLLM.generate, with asyncrl nowhere in the path."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(
        max_tokens=spec.max_tokens,
        temperature=spec.temperature,
        top_p=spec.top_p,
        stop_token_ids=list(spec.stop_token_ids),
        logprobs=0,
    )
    request_id = f"raw-{random.getrandbits(48)}"
    final = None
    async for output in engine.llm.generate(
        TokensPrompt(prompt_token_ids=prompt_ids), params, request_id
    ):
        final = output
    return len(final.outputs[0].token_ids) if final else 0


async def _decode(
    engine: Engine, prompts: list[list[int]], in_flight: int, codec: ChatCodec
) -> Rate:
    """Generated tokens/s with `in_flight` requests at a time (greedy turns end at
    their natural stop, so both engines produce the same text)."""
    spec = SamplingSpec(
        max_tokens=TURN_TOKENS, temperature=0.0, stop_token_ids=tuple(codec.stop_token_ids)
    )
    queue = list(prompts)

    async def lane() -> int:
        tokens = 0
        while queue:
            tokens += len((await engine.generate(queue.pop(), spec, 300.0)).token_ids)
        return tokens

    await _warm_up(engine, codec)
    return await _timed(lambda: asyncio.gather(*[lane() for _ in range(in_flight)]))


async def _placement(model: str, values: dict[str, float]) -> list[tuple[str, str]]:
    """Long-tailed request lengths over two engines: Router vs round robin."""
    rng = random.Random(0)
    lengths = [min(600, int(rng.lognormvariate(3.5, 1.0)) + 8) for _ in range(96)]
    prompt = [1, 2, 3, 4, 5, 6, 7, 8]
    engines = [await _engine(model, core=0), await _engine(model, core=1)]
    rows = []
    try:
        for engine in engines:
            await engine.generate(prompt, SamplingSpec(max_tokens=32, ignore_eos=True), 120.0)
        runs: dict[str, list[tuple[float, float]]] = {"router": [], "round robin": []}
        for _ in range(2):
            for name in runs:
                choose = None if name == "router" else _round_robin(len(engines))
                runs[name].append(await _place_all(engines, prompt, lengths, choose))
        results = {name: _means(values) for name, values in runs.items()}
        for name, (skew, seconds) in results.items():
            rows.append((f"placement skew / makespan, {name}", f"{skew:.2f} / {seconds:.1f}s"))
            key = name.replace(" ", "_")
            values |= {f"placement_skew_{key}": skew, f"placement_makespan_s_{key}": seconds}
        values["makespan_round_robin_over_router"] = (
            results["round robin"][1] / results["router"][1]
        )
        rows.append(
            (
                "makespan round robin / router",
                f"{results['round robin'][1] / results['router'][1]:.2f}x",
            )
        )
    finally:
        for engine in engines:
            engine.shutdown()
    return rows


async def _place_all(
    engines: list[Engine], prompt: list[int], lengths: list[int], choose: Callable[[], int] | None
) -> tuple[float, float]:
    router = Router([str(i) for i in range(len(engines))])
    placed = [0.0] * len(engines)

    async def one(index: int, length: int) -> None:
        await asyncio.sleep(index * 0.03)  # arrivals, not one burst
        cost = len(prompt) + length
        if choose is None:
            worker = int(router.place(f"s{index}", cost).worker_id)
        else:
            worker = choose()
        placed[worker] += cost
        spec = SamplingSpec(max_tokens=length, ignore_eos=True)
        try:
            await engines[worker].generate(prompt, spec, 300.0)
        finally:
            if choose is None:
                router.done(str(worker), cost)
                router.end_session(f"s{index}")

    started = time.perf_counter()
    await asyncio.gather(*[one(i, n) for i, n in enumerate(lengths)])
    return placement_skew(placed), time.perf_counter() - started


def _means(values: list[tuple[float, float]]) -> tuple[float, float]:
    return (
        sum(v[0] for v in values) / len(values),
        sum(v[1] for v in values) / len(values),
    )


def _round_robin(n: int) -> Callable[[], int]:
    counter = iter(range(1 << 30))
    return lambda: next(counter) % n


async def _engine(
    model: str, core: int, speculative: str = "none", tokens: int = 4, dtype: str = "float32"
) -> Engine:
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(core % (os.cpu_count() or 1))
    spec = SpeculativeConfig(
        method=speculative, num_speculative_tokens=tokens, prompt_lookup_min=2, prompt_lookup_max=5
    )
    cfg = RolloutConfig(max_model_len=MAX_MODEL_LEN, speculative=spec)
    engine = Engine(model, cfg, dtype=dtype)
    await engine.start()
    return engine


async def _warm_up(engine: Engine, codec: ChatCodec) -> None:
    await engine.generate(codec.encode("warm up"), SamplingSpec(max_tokens=8), 120.0)


async def _timed(make: Callable) -> Rate:
    started = time.perf_counter()
    counts = await make()
    return Rate(sum(counts), time.perf_counter() - started)


def _echo_prompts(codec: ChatCodec, count: int) -> list[list[int]]:
    """Opening prompts followed by an opened calculator call: the continuation is
    the question's expression, copied (what ngram drafting is for)."""
    env = CalculatorEnv()
    opened_call = codec.encode('<tool_call>{"name": "calculator", "arguments": {"expression": "')
    prompts = []
    for seed in range(count):
        observation, _ = env.reset(seed=seed)
        prompts.append(codec.prompt_ids(list(observation)) + opened_call)
    return prompts


def _codec(model: str) -> ChatCodec:
    from transformers import AutoTokenizer

    env = make_env("asyncrl/Calculator-v0")
    return ChatCodec(AutoTokenizer.from_pretrained(model), env.tool_schemas)


def _hybrid_policy() -> str:
    """The tiny Qwen3.5 policy `model=tiny_qwen35` builds (cached after the first)."""
    from bootstrap.policy import resolve_policy
    from core.compose import compose

    return resolve_policy(compose(["model=tiny_qwen35"]).model)


def _parse() -> argparse.Namespace:
    args = parser(__doc__, model=True)
    args.add_argument("--episodes", type=int, default=32)
    args.add_argument("--hybrid", action="store_true", help="speculation on tiny Qwen3.5 only")
    return args.parse_args()


if __name__ == "__main__":
    main()
