"""Weight-sync benchmark: the pause a weight update causes against a plain
shared-memory copy of the same bytes, for three model sizes, side by side in one
run (not a test).

    python -m bench.weight_sync [--updates 3] [--sizes small,medium,large] [--json PATH]

For each size (tiny Qwen3s with random weights, built once from config with
bootstrap.build and the tiny policy's tokenizer, cached beside it; nothing is
downloaded) one vLLM engine (rollout.engine.Engine, the rollout worker's engine)
starts, and while one request streams tokens from it:

- real path: the weights are exported the way the learner does
  (core.shm.write_snapshot of the model's state_dict into /dev/shm; the learner
  adds a Ray call and, under ZeRO-3, a gather) and loaded with
  `Engine.update_weights(..., lock="none")`: vLLM's pause (mode "keep": the
  streaming request freezes mid-turn), our `asyncrl_shm` weight-transfer
  backend (rollout.transport), resume. Reported: the pause (what runs log as
  `sync/pause_s`), its load part, the export, and the longest gap between two
  tokens of the streaming request around the update (the stall generation
  actually saw, recompute after the cleared KV cache included);
- floor: the same tensors written to a file in /dev/shm with plain `write`
  calls and read back with `readinto` into a preallocated, already touched
  buffer: the copy any shared-memory transfer must make, with nothing else.

One warm-up update, then `--updates` measured ones; medians reported. Printed
per size: bytes, pause / floor (goal <= 2x), (export + pause) / floor, and the
absolute times. `--json PATH` also writes them (bench.record).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from bench.preamble import environment, model_cache, parser, policy
from bench.record import write_json
from bootstrap.cache import cached_build
from core.config import RolloutConfig, TinyModelConfig
from core.shm import DEFAULT_ROOT, remove_snapshot, write_snapshot
from rollout.engine import Engine


def _shape(hidden: int, mlp: int, layers: int, heads: int, kv_heads: int, head_dim: int):
    return TinyModelConfig(
        hidden_size=hidden,
        intermediate_size=mlp,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
    )


SIZES = {
    "small": _shape(128, 384, 4, 4, 2, 32),  # the default tiny policy's shape (~4 MB in fp32)
    "medium": _shape(384, 1152, 6, 6, 2, 64),  # ~10x the bytes (~43 MB)
    "large": _shape(1024, 3072, 8, 16, 4, 64),  # ~100x (~390 MB): starts in under a minute
}
MAX_MODEL_LEN = 2048
PROMPT = list(range(10, 26))


def main() -> None:
    args = _parse()
    environment(vllm=True)
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "0"
    names = args.sizes.split(",")
    results = {}
    for name in names:
        model = ensure_model(name, SIZES[name])
        results[name] = asyncio.run(_measure(model, args.updates))
        _print(name, results[name])
    print(f"\nweight sync vs plain shared-memory copy ({args.updates} updates per size, medians)")
    print(
        f"  {'size':<7} {'MB':>7} {'pause/floor':>11} {'(export+pause)/floor':>20} "
        f"{'pause s':>8} {'load s':>7} {'export s':>8} {'stall s':>8} {'floor s':>8}"
    )
    for name, r in results.items():
        print(
            f"  {name:<7} {r['bytes'] / 1e6:>7.1f} {r['pause_over_floor']:>10.2f}x "
            f"{r['export_pause_over_floor']:>19.2f}x {r['pause_s']:>8.3f} {r['load_s']:>7.3f} "
            f"{r['export_s']:>8.3f} {r['stall_s']:>8.3f} {r['floor_s']:>8.3f}"
        )
    print("  goal: pause / floor <= 2x")
    write_json(args.json, "weight_sync", {"updates": args.updates, "sizes": results})


def ensure_model(name: str, arch: TinyModelConfig) -> str:
    """A randomly initialised Qwen3 of shape `arch` with the tiny policy's
    tokenizer, saved once under the model cache; returns its directory."""
    tokenizer_dir = policy()
    recipe = json.dumps({"arch": dataclasses.asdict(arch), "tokenizer": tokenizer_dir})
    target = model_cache() / f"bench-sync-{name}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"

    def build(staging: Path) -> None:
        from transformers import AutoTokenizer

        from bootstrap.build import build_model

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        build_model(tokenizer, arch, seed=0).save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    return cached_build(target, build)


async def _measure(model_path: str, updates: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    state = model.state_dict()  # what the learner exports (tied tensors included)
    directory = Path(DEFAULT_ROOT) / f"asyncrl-bench-sync-{os.getpid()}"
    directory.mkdir(parents=True, exist_ok=True)
    engine = Engine(model_path, RolloutConfig(max_model_len=MAX_MODEL_LEN, max_num_seqs=8))
    try:
        floors = [_plain_copy(list(state.values()), directory / "floor.bin") for _ in range(3)]
        await engine.start()
        stream = _Stream(engine)
        stream.start()
        await stream.wait_for_tokens(8)
        samples = []
        for version in range(1, updates + 2):  # the first is a warm-up
            await asyncio.sleep(0.5)  # tokens between updates: the normal gap
            started = time.perf_counter()
            snapshot = await asyncio.to_thread(
                write_snapshot, directory / f"policy-v{version}.bin", state.items(), version
            )
            exported = time.perf_counter()
            sync = await engine.update_weights(snapshot, lock="none")
            done = time.perf_counter()
            await stream.wait_for_tokens(4)
            samples.append(
                {
                    "export_s": exported - started,
                    "pause_s": sync.pause_s,
                    "load_s": sync.load_s,
                    "stall_s": stream.longest_gap(exported, done),
                    "bytes": float(snapshot.total_bytes),
                }
            )
            remove_snapshot(snapshot)
        await stream.stop()
        normal_gap = stream.median_gap()
    finally:
        engine.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    measured = samples[1:]

    def median(key: str) -> float:
        return statistics.median(s[key] for s in measured)

    write_s = statistics.median(f[0] for f in floors)
    read_s = statistics.median(f[1] for f in floors)
    floor = write_s + read_s
    return {
        "model": model_path,
        "parameters": float(sum(p.numel() for p in model.parameters())),
        "bytes": samples[0]["bytes"],
        "pause_s": median("pause_s"),
        "load_s": median("load_s"),
        "export_s": median("export_s"),
        "stall_s": median("stall_s"),
        "normal_token_gap_s": normal_gap,
        "floor_s": floor,
        "floor_write_s": write_s,
        "floor_read_s": read_s,
        "pause_over_floor": median("pause_s") / floor,
        "export_pause_over_floor": (median("export_s") + median("pause_s")) / floor,
        "stall_over_floor": median("stall_s") / floor,
        "warmup": samples[0],
        "samples": measured,
    }


def _plain_copy(tensors: list[Any], path: Path) -> tuple[float, float]:
    """(write, read) seconds: the tensors' bytes into a /dev/shm file with plain
    writes, then back into a preallocated, already touched buffer."""
    import torch

    arrays = [t.detach().contiguous().reshape(-1).view(torch.uint8).numpy() for t in tensors]
    total = sum(a.nbytes for a in arrays)
    buffer = torch.ones(total, dtype=torch.uint8).numpy()  # touched: no page faults timed
    started = time.perf_counter()
    with open(path, "wb") as handle:
        for array in arrays:
            handle.write(array.data)
    written = time.perf_counter()
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        done = 0
        while done < total:
            count = handle.readinto(view[done:])
            if not count:
                break
            done += count
    read = time.perf_counter()
    path.unlink()
    if done != total:
        raise RuntimeError(f"plain copy read {done} of {total} bytes")
    return written - started, read - written


class _Stream:
    """One request after another, streaming tokens; every arrival is timestamped."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.stamps: list[float] = []
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._request = ""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=MAX_MODEL_LEN - len(PROMPT) - 8,
            ignore_eos=True,
            temperature=1.0,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )
        count = 0
        while not self._stopping:
            count += 1
            self._request = f"stream-{count}"
            prompt = TokensPrompt(prompt_token_ids=PROMPT)
            async for _ in self.engine.llm.generate(prompt, params, self._request):
                self.stamps.append(time.perf_counter())
                if self._stopping:
                    break

    async def wait_for_tokens(self, count: int, timeout_s: float = 300.0) -> None:
        target = len(self.stamps) + count
        deadline = time.monotonic() + timeout_s
        while len(self.stamps) < target:
            if self._task is not None and self._task.done():
                self._task.result()  # raises what stopped the stream
                raise RuntimeError("the streaming request ended")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {count} tokens within {timeout_s:.0f}s")
            await asyncio.sleep(0.01)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest wait between two tokens whose interval overlaps [start, end]."""
        gaps = [
            b - a
            for a, b in zip(self.stamps, self.stamps[1:], strict=False)
            if b >= start and a <= end
        ]
        return max(gaps, default=float("nan"))

    def median_gap(self) -> float:
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return statistics.median(gaps) if gaps else float("nan")

    async def stop(self) -> None:
        self._stopping = True
        await self.engine.llm.abort(self._request)
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 30.0)
            except TimeoutError:
                self._task.cancel()


def _print(name: str, r: dict[str, Any]) -> None:
    print(
        f"\n{name}: {r['parameters'] / 1e6:.1f}M parameters, {r['bytes'] / 1e6:.1f} MB; "
        f"pause {r['pause_s']:.3f}s (load {r['load_s']:.3f}s), export {r['export_s']:.3f}s, "
        f"stall seen by a streaming request {r['stall_s']:.3f}s "
        f"(normal token gap {r['normal_token_gap_s'] * 1000:.1f} ms); "
        f"plain copy {r['floor_s']:.3f}s (write {r['floor_write_s']:.3f}s, "
        f"read {r['floor_read_s']:.3f}s); pause / floor {r['pause_over_floor']:.2f}x",
        flush=True,
    )


def size_args(doc: str | None) -> argparse.Namespace:
    """The command line: `--updates`, `--sizes` (of SIZES), `--json`; `doc` is the help
    (bench.cross_node_sync takes the same)."""
    args = parser(doc)
    args.add_argument("--updates", type=int, default=3, help="measured updates per size")
    args.add_argument(
        "--sizes", default=",".join(SIZES), help=f"comma-separated, of {', '.join(SIZES)}"
    )
    return args.parse_args()


def _parse() -> argparse.Namespace:
    return size_args(__doc__)


if __name__ == "__main__":
    main()
