"""Config schemas: one dataclass per part, registered in Hydra's ConfigStore.

Every knob of a run lives here with a line saying what it does; the YAML files
under conf/ only choose values. Because the schemas are structured, a typo in
a key, a wrong type or a choice that is not one (core.choices) fails at start-up
with the key's name, not deep in a run. The rules a type cannot state (ranges,
fields that depend on each other) and composing a Config from conf/ live in
core.compose; `ConfigError` and `validate` are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.choices import (
    AdvantageStd,
    AlgorithmName,
    CurriculumWeighting,
    LossAggregation,
    LrSchedule,
    OffPolicy,
    PlacementMode,
    Precision,
    RolloutLock,
    SpeculativeMethod,
    TinyArchitecture,
    TrainerMode,
    WandbMode,
    WeightTransport,
)
from core.compose import ConfigError as ConfigError  # re-exported: its users import it here
from core.compose import validate as validate


@dataclass
class TinyModelConfig:
    """How the default local policy is built when no path is given."""

    vocab_size: int = 1024
    """Upper bound for the BPE vocabulary trained on the task's dialogues."""
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    num_experts: int = 0
    """0: dense Qwen3. >0: Qwen3-MoE with this many experts per layer."""
    experts_per_token: int = 2
    moe_intermediate_size: int = 128
    architecture: TinyArchitecture = TinyArchitecture.qwen3
    """qwen3 | qwen3_5: Qwen3.5's hybrid layers (Gated DeltaNet linear attention with a
    gated full-attention layer every `full_attention_interval`), dense or MoE by
    num_experts (with a shared expert), and `mtp_layers` multi-token-prediction layers |
    idefics3: a vision-language policy (a tiny vision tower, Idefics3's connector, a
    Llama text model of these sizes; bootstrap/tiny_vl.py says why not Qwen-VL),
    warmed up on Shapes-v0."""
    full_attention_interval: int = 4
    """qwen3_5: every this-many-th layer is full attention, the others linear."""
    linear_key_heads: int = 2
    linear_value_heads: int = 4
    linear_head_dim: int = 64
    """qwen3_5: the Gated DeltaNet heads' size (vLLM's CPU kernel takes 64 or 128 only:
    csrc/cpu gdn dispatch; 32 fails at the first forward)."""
    mtp_layers: int = 1
    """qwen3_5: multi-token-prediction layers (vLLM's `speculative.method=mtp` drafts
    with them)."""
    demos: int = 4000
    """Demonstration dialogues generated for the tokenizer and the warm-up."""
    tool_use_fraction: float = 0.5
    """Fraction of demonstrations that use the tool (the rest answer directly)."""
    warmup_steps: int = 1000
    """Supervised warm-up steps: enough to learn the format, not to master the task."""
    warmup_batch_size: int = 32
    warmup_lr: float = 3e-3
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = "tiny-qwen3"
    path: str | None = None
    """A local checkpoint directory or hub id; None builds the tiny local model."""
    dtype: str = "float32"
    """Weights dtype for the engine and the learner (fp32 on CPU: no native bf16 here)."""
    cache_dir: str = "~/.cache/asyncrl/models"
    """Where bootstrapped tiny models are kept, keyed by a hash of their settings."""
    chat_template: str | None = None
    """A chat template for a checkpoint that has none (or to replace its own): a
    built-in name (`qwen`: ChatML with Hermes tool calls, the tiny policy's) or a
    path to a .jinja file. None: the checkpoint's own. The run sees the checkpoint
    through a directory of links plus this template (the checkpoint is not changed)."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class SpeculativeConfig:
    method: SpeculativeMethod = SpeculativeMethod.none
    """none | ngram (prompt lookup: cheap, good when turns echo tool output) |
    draft_model (a smaller drafter, `draft_model` below) | mtp (the policy's own
    multi-token-prediction heads; models that have them, e.g. Qwen3-Next)."""
    num_speculative_tokens: int = 3
    prompt_lookup_min: int = 2
    prompt_lookup_max: int = 4
    draft_model: str | None = None
    """Path of the drafter for method=draft_model."""
    sync_draft: bool = False
    """Re-sync the drafter from the learner's weights on every update (vLLM's draft
    weight-update path). Only possible when the drafter has the policy's shapes."""


AUTO_MAX_MODEL_LEN = 1024
"""The cap on rollout.max_model_len=None (the model's own context length)."""


@dataclass
class RolloutConfig:
    num_workers: int = 1
    """vLLM engines, one Ray actor each."""
    max_tokens_per_turn: int = 48
    max_model_len: int | None = AUTO_MAX_MODEL_LEN
    """Token budget of a whole trajectory (prompt, all turns and observations).
    None, what conf/rollout/vllm.yaml sets: the model's own context length, capped
    at AUTO_MAX_MODEL_LEN (a bigger context costs KV-cache memory in every engine:
    ask for it by number). A number above the model's own context is refused at
    start-up. (A number by default here for code that starts a System without the
    run's checks, which settle None: orchestrator.preflight.)"""
    temperature: float = 1.0
    top_p: float = 1.0
    lock: RolloutLock = RolloutLock.turn
    """Multi-turn rollout locking, i.e. when weight updates may land:
    `trajectory`: every token of a trajectory comes from one version; a worker with
    an update pending admits no new trajectories, drains its own (bounded by
    lock_timeout_s, then the rest are recorded lock-broken), updates and re-opens,
    one worker at a time;
    `turn`: between turns (each turn is one version);
    `none`: mid-generation, frozen and resumed (per-token versions recorded)."""
    lock_timeout_s: float = 60.0
    """How long a `trajectory`-locked worker waits for its trajectories to finish."""
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    return_routed_experts: bool = False
    """Record the experts vLLM routed each generated token to (MoE models; needs
    vLLM's Model Runner V2, i.e. a GPU). Used by the learner's routing replay."""
    bind_cores: bool = True
    """On CPU, pin worker i's engine to core i (mod the core count) so engines
    running side by side do not share a core."""
    max_num_seqs: int = 256
    engine_spin_s: float = 0.1
    """How long vLLM's engine-core and worker processes busy-wait for each other's next
    message before sleeping on a socket (vLLM hard-codes 1 s: after every burst both
    processes spin a second, a core each, which on CPU is the learner's and the env
    pools' time; rollout.vllm_plugin caps it). Only where vLLM runs a separate worker
    process: a CPU engine bound to one core (rollout.bind_cores) has none."""
    prespawn_engine_core: bool = True
    """Spawn a CPU engine's engine-core process before vLLM asks for it, so that it
    imports vLLM while the worker does (rollout.warm_core); false: vLLM spawns it
    once the worker has imported vLLM and built the engine's config. Only where the
    engine runs its model in that one process (a CPU engine bound to one core)."""
    kv_cache_gib: int = 1
    """VLLM_CPU_KVCACHE_SPACE for CPU engines."""
    gpu_memory_utilization: float = 0.3
    enforce_eager: bool = True
    num_cpus: float = 0
    """Ray CPUs reserved per worker (0: never blocks scheduling on a small machine)."""
    gpus_per_worker: int = 0
    """GPUs per rollout worker (0 on CPU). Above 1, vLLM runs tensor parallel over
    them inside the worker (tensor_parallel_size); a worker's GPUs are on one node."""
    startup_timeout_s: float = 300.0
    generate_timeout_s: float = 120.0
    """One turn's generation; past it the request is aborted and the trajectory too."""
    sync_timeout_s: float = 120.0
    sleep_level: int = 1
    """Under placement=colocated, vLLM sleeps at this level while the learner steps on
    the same GPUs (vLLM's levels: 1 offloads the weights to CPU memory and drops the KV
    cache; 2 drops both: the update that follows loads every weight anyway); 0 never
    sleeps. Frozen requests resume after the update. Needs trainer.mode=sync. GPU
    workers only: vLLM's CPU workers ignore sleep (vllm/v1/worker/cpu_worker.py:179-185),
    so colocated CPU workers stay awake."""
    weight_transport: WeightTransport = WeightTransport.auto
    """How each version reaches a worker (core.transports): `shm`, the learner's
    snapshot file in shared memory, read in place (workers on learner rank 0's node
    only; refused at start-up otherwise); `object_store`, the snapshot's bytes through
    Ray's object store to the worker's node, then a node-local shared-memory file
    (any node); `auto`, shm on rank 0's node, object_store elsewhere. (CUDA IPC and
    NCCL are not built yet.)"""
    engine_args: dict[str, Any] = field(default_factory=dict)
    """Passed through to vLLM's AsyncEngineArgs (overrides the fields above)."""


@dataclass
class EnvConfig:
    id: str = "asyncrl/Calculator-v0"
    """Registered gymnasium id, `pkg.module:Name-v0` or `pkg.module:Class`."""
    kwargs: Any = field(default_factory=dict)
    """Constructor arguments of the env (difficulty, max_turns, reward_weights, ...):
    the env's own, not a schema's. `env.id=...` on the command line starts them
    empty (the env's defaults); `env.kwargs.<name>=v` sets one, `env.kwargs={...}`
    replaces them all (rollout.launch rewrites both into Hydra's forms). Typed Any
    so that Hydra can replace the mapping instead of merging into it."""
    group_size: int = 8
    """Samples per task: a GRPO group."""
    num_pools: int = 1
    """EnvPool actors running episodes concurrently."""
    episode_timeout_s: float = 600.0
    rerun_failed_groups: bool = True
    """A group with a member failed by the environment (or aborted by the engine)
    is set aside whole and its task run again, so GRPO baselines are not biased
    toward the episodes that survived."""
    max_group_reruns: int = 2
    """Re-runs of one task; after that the group trains on its surviving members."""
    breaker_window: int = 64
    """Episodes over which the env circuit breaker measures the failure rate."""
    breaker_failure_rate: float = 0.5
    """Above this share of failed episodes in the window, the run stops with one line."""
    success_reward: float = 1.0
    """An episode whose reward reaches this counts as solved: evaluation's accuracy and
    pass@k, and the curriculum's pass rates, count these."""


@dataclass
class LearnerConfig:
    num_ranks: int = 1
    """DeepSpeed ranks, one Ray actor each (gloo on CPU, NCCL on GPU)."""
    zero_stage: int = 2
    precision: Precision = Precision.fp32
    """fp32 | bf16 (emulated and slow on CPUs without AMX) | fp8 (torchao float8
    training of the transformer blocks' linear layers; embeddings, LM head, norms
    and MoE routers stay in fp32; see learner/fp8.py) | fp8_bf16 (the same float8
    GEMMs, everything else in bf16 with DeepSpeed's fp32 master weights: the
    Qwen3.5 report's recipe)."""
    lr: float = 2e-4
    weight_decay: float = 0.0
    lr_warmup_steps: int = 0
    lr_schedule: LrSchedule = LrSchedule.constant
    """After the linear warm-up: constant | cosine (to lr_min_ratio * lr at lr_decay_steps)."""
    lr_decay_steps: int = 1000
    lr_min_ratio: float = 0.1
    grad_clip: float = 1.0
    micro_batch_tokens: int = 16384
    """Padded tokens per micro-batch; a step accumulates as many as the batch needs."""
    share_prefix: bool = True
    """Samples of a micro-batch that share a prompt (a group's) have it computed once,
    their continuations attending to its keys and values (learner/shared_prefix.py):
    the same loss and gradient, fewer positions forwarded (`learner/forward_tokens`).
    Off for models with sliding-window or linear attention, and for samples that carry
    MoE routing to replay."""
    threads: int = 2
    """torch threads in each learner process."""
    borrow_idle_cores: bool = True
    """CPU, split placement, async mode: while the rollout engines on a rank's node
    have nothing to do until the next version (no group in flight, none allowed to
    start, no evaluation, no publish), the rank also runs on the cores they are bound
    to, from its next layer or micro-batch until the step ends (learner/cores.py;
    `perf/learner_borrowed_s`). In sync mode the learner has every core anyway."""
    deepspeed: dict[str, Any] = field(default_factory=dict)
    """Merged last into the generated DeepSpeed config: anything DeepSpeed accepts."""
    routing_replay: bool = True
    """MoE models: when trajectories carry the engine's routed experts
    (rollout.return_routed_experts), the learner's MoE layers use those experts
    (R3); the mixing weights still come from the learner's router."""
    startup_timeout_s: float = 600.0
    step_timeout_s: float = 600.0
    gpus_per_rank: int = 0
    """GPUs per DeepSpeed rank: 0 (CPU, gloo) or 1 (NCCL); ranks are packed per node."""


@dataclass
class AlgoConfig:
    name: AlgorithmName = AlgorithmName.grpo
    """grpo | gspo (sequence-level ratio) | dapo (clip-higher, token-mean, dynamic
    sampling, overlong shaping: conf/algo/dapo.yaml) | ppo (clipped surrogate,
    leave-one-out baseline; no critic)."""
    clip_eps: float | None = None
    """Lower clip of the ratio (1 - clip_eps); None takes the algorithm's own (0.2;
    GSPO 3e-4). Independent of clip_eps_high."""
    clip_eps_high: float | None = None
    """Upper clip of the ratio (1 + clip_eps_high, DAPO's clip-higher); None takes the
    algorithm's own (0.2; DAPO 0.28; GSPO 4e-4). Independent of clip_eps."""
    clip_ratio_c: float | None = 3.0
    """Dual-clip (verl's clip_ratio_c): a token with negative advantage loses at most
    clip_ratio_c * |A|, however large its ratio (a stale or mismatched token cannot
    blow up the loss). Must be > 1; None turns it off."""
    log_ratio_clamp: float = 20.0
    """|log ratio| is clamped to this before exp (verl clamps at 20): a token whose
    learner and behavior logprobs differ wildly gives a finite ratio."""
    normalize_std: bool = True
    """Divide group-centred rewards by the group's std (GRPO); False is Dr. GRPO."""
    adv_std: AdvantageStd = AdvantageStd.sample
    """sample (default: what verl and TRL compute, so runs compare) | population."""
    entropy_coef: float = 0.0
    """Entropy bonus: the loss gets -entropy_coef * (token entropy), with its gradient.
    0 computes entropy for the metric only, without a graph."""
    loss_agg: LossAggregation | None = None
    """token-mean | seq-mean-token-mean | seq-mean-token-sum; None: the algorithm's."""
    off_policy: OffPolicy = OffPolicy.behavior
    """How samples from older or numerically different policies are corrected:
    behavior: the PPO ratio is taken against the engine's behavior logprobs;
    tis: decoupled PPO (ratio against the learner's own logprobs before the
    update) times the importance weight pi_learner/pi_behavior truncated at is_cap;
    mis: the same, but tokens whose weight lies outside [1/is_cap, is_cap] are masked
    and leave the loss's denominators too (token-mean: the batch's kept tokens,
    counted by one extra forward pass without a graph; seq-mean-*: each sequence's)."""
    is_cap: float = 2.0
    kl_coef: float = 0.0
    """Penalty on KL(current || reference), the reference being the initial policy
    (k3 estimator per token). Off by default: it costs a frozen copy of the model
    and a forward pass per micro-batch."""
    overlong_buffer: int = 0
    """DAPO's soft overlong punishment: the last `overlong_buffer` tokens before
    overlong_max_tokens cost reward linearly, up to -overlong_penalty at the limit
    (0: off). The length is a trajectory's longest turn (its generated tokens)."""
    overlong_penalty: float = 1.0
    """The reward lost by a turn that reaches overlong_max_tokens."""
    overlong_max_tokens: int | None = None
    """The turn length the shaping counts toward; None: rollout.max_tokens_per_turn."""


@dataclass
class BufferConfig:
    groups_per_batch: int = 8
    max_staleness: int = 1
    """Policy versions a trajectory's oldest token may lag the learner when trained on."""
    capacity_groups: int = 256
    replay_ratio: int = 1
    """How many times a group may be trained on (each time within max_staleness)."""
    drop_zero_variance: bool = False
    """DAPO dynamic sampling: filter groups whose rewards are all equal (no signal)."""


@dataclass
class WandbConfig:
    enabled: bool = True
    mode: WandbMode = WandbMode.offline
    """offline (default: no network needed; `wandb sync` later) | online | disabled."""
    project: str = "asyncrl"
    entity: str | None = None


@dataclass
class LoggerConfig:
    run_dir: str = "runs/latest"
    """Where metrics.jsonl, the plot, the W&B run and the final model go (conf/ sets
    it to Hydra's run directory)."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    plot_every: int = 10
    """Redraw reward_curve.png every this many steps, at most once per
    plot_min_interval_s (0: only when the run ends, which always draws it)."""
    plot_min_interval_s: float = 30.0
    """The first redraw comes this long after the run's logger starts, and the next
    ones no sooner after the last. A redraw costs the driver ~0.25 s of CPU (the first
    ~1 s: matplotlib's import), on a thread beside its event loop; a run of
    sub-second steps would otherwise spend a tenth of its driver on plots."""
    progress: bool = True
    """A progress bar on stderr, redrawn once per learner step."""
    verbose: bool = False
    """Show every library's log lines and warnings (vLLM, Ray, torch, ...). By default
    the console holds asyncrl's own log lines, the progress bar and warnings that say
    something about this run; third-party notices are filtered where they start."""


@dataclass
class TrainerConfig:
    total_steps: int = 40
    mode: TrainerMode = TrainerMode["async"]
    """async: rollouts never wait for the learner beyond the staleness bound;
    sync: generate a batch, train, publish, repeat (staleness 0)."""
    seed: int = 0
    batch_timeout_s: float = 600.0
    """How long the learner waits for its next batch before the run stops with an error."""
    checkpoint_every: int = 50
    """Steps between run checkpoints under checkpoint_dir (0: none)."""
    checkpoint_dir: str | None = None
    """Where run checkpoints go (None: <run_dir>/checkpoints). Every learner rank
    writes its part there, so on a cluster it must be storage every learner node
    mounts at the same path; a resume that a rank cannot see is refused."""
    resume: bool = False
    """Continue from the newest checkpoint under checkpoint_dir (by default the
    stopped run's directory: `hydra.run.dir=runs/<date>/<time>`)."""


@dataclass
class EvalConfig:
    every: int = 0
    """Evaluate the policy every this many versions, before the first step, at a resume
    and after the last step (0: never). An evaluation pins the version it evaluates:
    the next version is published once it has finished, while the learner trains on."""
    tasks: int = 64
    """Held-out tasks per evaluation: the first `tasks` rows of the eval env's split
    (a dataset env; 0: all of them), or seeds first_seed, first_seed+1, ... (any env)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides of env.kwargs for the held-out env (e.g. {split: eval} for env=dataset,
    which is the default there); the env's id is env.id."""
    first_seed: int = 1_000_000_000
    """First seed of the held-out tasks of an env without a dataset (training seeds
    start at trainer.seed * 1e6 and count up, so they stay apart)."""
    samples: int = 1
    """Samples per held-out task."""
    temperature: float = 0.0
    """Sampling temperature of evaluation (0: greedy)."""
    pass_k: list[int] = field(default_factory=lambda: [1])
    """pass@k reported for each k (each <= samples), unbiased from `samples` draws."""
    timeout_s: float = 600.0
    """Bound on one evaluation; past it the run stops, naming the wait."""


@dataclass
class CurriculumConfig:
    enabled: bool = False
    """Sample the tasks of an env with a finite task set (env=dataset) by their pass
    rates instead of in a fixed shuffled order (the plain order is an epoch-wise
    shuffle either way)."""
    min_groups: int = 1
    """Finished groups of a task before it may be retired."""
    retire_solved_at: float = 1.0
    """A task whose pass rate reaches this is retired as solved (>1: never)."""
    retire_unsolved_at: float = 0.0
    """A task whose pass rate is at most this is retired as unsolvable (<0: never)."""
    retry_unsolvable_epochs: int = 2
    """A task retired as unsolvable comes back (its counts cleared) this many epochs
    later, or when every task is retired (0: never)."""
    weighting: CurriculumWeighting = CurriculumWeighting.none
    """none: every active task once per epoch; mid: draw active tasks with weight
    p(1-p) on their estimated pass rate p (Beta(1,1) prior), favouring mid difficulty."""


@dataclass
class BalancerConfig:
    enabled: bool = True
    max_in_flight: int = 64
    """Most groups in flight (the staleness gate may allow fewer)."""
    target_batches: float = 2.0
    """Above this many batches waiting in the buffer, rollouts run ahead: decrease."""
    starve_s: float = 0.5
    """A learner that waited longer than this for its batch is starved: increase."""
    max_queue_depth: float = 256.0
    """Per-worker requests beyond which engines are saturated: no increase."""
    increase: float = 1.0
    decrease: float = 0.5


@dataclass
class SupervisorConfig:
    enabled: bool = True
    interval_s: float = 5.0
    """How often every rollout worker's health is checked."""
    health_timeout_s: float = 30.0
    """A worker that does not answer within this is treated as dead (hung)."""
    max_restarts: int = 3
    """Replacements of one worker (or env pool) before its circuit breaker opens;
    also how often one task's group may be declared lost before the run stops."""
    group_deadline_s: float = 900.0
    """A group awaited longer than this is declared lost (its call cancelled, its
    trajectories `lost` in the ledger, `fault/groups_lost`) and its task re-run; its
    env pool is replaced if it does not answer a health ping within health_timeout_s.
    Keep it above env.episode_timeout_s (600): a pool times its own episodes out
    there and returns the group, so only a pool that is stuck, or a call that went
    astray, gets this far; the 300 s beyond leave room for a busy pool's event loop."""


@dataclass
class RayConfig:
    address: str | None = None
    """None starts a local Ray; `auto` or an address joins a cluster."""
    num_cpus: int | None = None
    include_dashboard: bool = False
    call_timeout_s: float = 30.0
    """Bound on the control plane's short calls to actors (stats, env pools' drain
    bookkeeping, logprobs for checks): past it the call counts as failed."""
    shutdown_timeout_s: float = 60.0
    """How long rollout workers get to stop their engines at the end of a run."""
    placement_timeout_s: float = 120.0
    """How long reserving a role's placement group may wait for its resources (held
    by other actors or jobs, or a node still joining) before the run stops, naming it."""
    rollout_resources: dict[str, float] = field(default_factory=dict)
    """Extra Ray resources each rollout worker's bundle reserves: a custom resource
    the nodes meant for rollout declare (`ray start --resources='{"rollout": 8}'`)
    keeps workers there."""
    learner_resources: dict[str, float] = field(default_factory=dict)
    """The same for each learner rank's bundle."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    placement: PlacementMode = PlacementMode.split
    """split: rollout workers and learner ranks on disjoint devices (on CPU, disjoint
    cores); colocated: learner ranks share the rollout workers' GPUs. Ray placement
    groups reserve both (orchestrator.placement)."""


def learner_algo(cfg: Config) -> AlgoConfig:
    """`cfg.algo` with the defaults it takes from the rest of the config filled in
    (the overlong shaping counts toward rollout.max_tokens_per_turn unless set)."""
    import dataclasses

    limit = cfg.algo.overlong_max_tokens or cfg.rollout.max_tokens_per_turn
    return dataclasses.replace(cfg.algo, overlong_max_tokens=limit)


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
