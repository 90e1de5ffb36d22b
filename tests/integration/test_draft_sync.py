"""`rollout.speculative.sync_draft` on a real vLLM engine: a draft model with the
policy's shapes (here the policy itself, `speculative.method=draft_model`) follows
the learner's weights only when the update loads into the drafter too.

Greedy decoding with the target as its own drafter accepts every draft. After the
target moves to other weights, a drafter left on the old ones drafts what the old
policy would say, and the target rejects nearly all of it; an update that also loads
the drafter (vLLM's draft weight-update session, run by
rollout.vllm_plugin.WorkerInspection.asyncrl_update_weights) brings acceptance back
to every draft. RolloutWorker passes `cfg.speculative.sync_draft` to
Engine.update_weights (rollout/worker.py).
"""

from __future__ import annotations

import os

import torch

from core.config import RolloutConfig, SpeculativeConfig
from core.shm import remove_snapshot, write_snapshot
from rollout.engine import Engine, SamplingSpec

PROMPT = "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n"
NOISE = 0.05
"""Std of the Gaussian noise added to every weight for the "other" policy: enough that
its greedy text is not the start policy's (measured: 0 of 69 drafts accepted)."""


def _other_weights(policy: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=noise) * NOISE)
    return model.state_dict()


def test_sync_draft_loads_the_learners_weights_into_the_drafter_too(
    tiny_policy, tmp_path, event_loop_runner
):
    from transformers import AutoTokenizer

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    speculative = SpeculativeConfig(
        method="draft_model", draft_model=tiny_policy, num_speculative_tokens=3
    )
    engine = Engine(
        tiny_policy,
        RolloutConfig(max_model_len=256, max_num_seqs=4, speculative=speculative),
        dtype="float32",
        seed=0,
    )
    ids = AutoTokenizer.from_pretrained(tiny_policy).encode(PROMPT)
    other = _other_weights(tiny_policy)

    async def acceptance() -> tuple[int, int]:
        """(drafted, accepted) over one greedy 24-token generation."""
        before = engine.snapshot_stats()
        await engine.generate(ids, SamplingSpec(24, temperature=0.0, ignore_eos=True), 60.0)
        after = engine.snapshot_stats()
        return after.spec_drafted - before.spec_drafted, after.spec_accepted - before.spec_accepted

    async def update(version: int, sync_draft: bool) -> None:
        snapshot = write_snapshot(tmp_path / f"v{version}.bin", other.items(), version, "float32")
        try:
            await engine.update_weights(snapshot, "turn", sync_draft=sync_draft)
        finally:
            remove_snapshot(snapshot)

    async def scenario() -> list[tuple[int, int]]:
        await engine.start()
        try:
            same = await acceptance()
            await update(1, sync_draft=False)
            stale_drafter = await acceptance()
            await update(2, sync_draft=True)
            return [same, stale_drafter, await acceptance()]
        finally:
            engine.shutdown()

    (drafted, accepted), (drafted_s, accepted_s), (drafted_f, accepted_f) = event_loop_runner(
        scenario()
    )
    print(
        f"accepted/drafted: same {accepted}/{drafted}, stale drafter {accepted_s}/{drafted_s}, "
        f"synced drafter {accepted_f}/{drafted_f}"
    )
    assert drafted > 0 and accepted == drafted  # the premise: a drafter equal to the target
    assert drafted_s > 0 and accepted_s < drafted_s / 4  # the drafter kept the old weights
    assert drafted_f > 0 and accepted_f == drafted_f  # sync_draft: it holds the new ones
