"""What vLLM reports for a request, read and checked against vLLM 0.32's layout:
the prompt asyncrl sends (token ids, plus images), the per-token weight versions
and the routed-experts rows of a finished request. Anything that cannot be placed
on tokens raises EngineError, never a guess. (Imports vLLM only inside functions.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.images import decode_png

if TYPE_CHECKING:
    import numpy as np


class EngineError(RuntimeError):
    pass


def tokens_prompt(prompt_ids: list[int], images: Sequence[bytes] | None) -> Any:
    from vllm.inputs import TokensPrompt

    if not images:
        return TokensPrompt(prompt_token_ids=prompt_ids)
    return TokensPrompt(
        prompt_token_ids=prompt_ids,
        multi_modal_data={"image": [decode_png(data) for data in images]},
    )


def reported_routing(final: Any, start: int) -> tuple[np.ndarray | None, int]:
    """The routing rows of a finished request and the position of the first, checked
    against vLLM 0.32's layout; (None, 0) when it reported none.

    What the installed vLLM does (paths under vllm/):
    - The scheduler starts a request's rows at min(routed_experts_prompt_start, P)
      (distributed/aux_output_connector/connector.py:71-77) and each step hands
      back rows up to, not including, the request's last token
      (connector.py:116-133); the output processor concatenates the steps' rows
      on the final output only (v1/engine/output_processor.py:466-468, 728-731).
      So P prompt and G generated tokens give P + G - 1 - start rows.
    - Prefix-cached positions are present: the worker reads their rows back from
      its store of rows saved per KV block hash when the block was computed
      (aux_output_connector/worker.py:253-287), and fails if the store evicted
      them (store.py:209-217); the store is emptied with the prefix cache
      (v1/core/sched/scheduler.py:2880-2881, connector.py:156-161), which
      `update_weights` clears.
    - Speculative decoding: rows of rejected drafts are dropped before they are
      emitted (aux_output_connector/worker.py:222-228); tokens cut after a stop
      string lose their rows too (output_processor.py:852-853).
    - Preemption: the request's capture state is dropped (scheduler.py:1587-1593)
      and restarts emitting at its last token (connector.py:76), so rows already
      returned are not repeated and the count above still holds.
    Anything else means the rows cannot be placed on tokens: EngineError, never a
    guess."""
    completion = final.outputs[0]
    routed = getattr(completion, "routed_experts", None)
    if routed is None:
        return None, 0
    num_prompt = len(final.prompt_token_ids or [])
    expected = num_prompt + len(completion.token_ids) - 1 - start
    if routed.ndim != 3 or len(routed) != expected:
        raise EngineError(
            f"vLLM reported routing of shape {tuple(routed.shape)} for {num_prompt} prompt and "
            f"{len(completion.token_ids)} generated tokens from position {start}; its layout "
            f"has {expected} rows [rows, layers, top-k] (P + G - 1 - start)"
        )
    return routed, start


def expand_versions(spans: Any, num_tokens: int) -> list[int]:
    """Per-token versions from vLLM's [start, end) weight-version spans."""
    if num_tokens == 0:
        return []
    if not spans:
        raise EngineError("vLLM reported no weight version for generated tokens")
    versions: list[int] = []
    for span in spans:
        versions.extend([int(span.version)] * (span.end - span.start))
    if len(versions) != num_tokens:
        raise EngineError(f"weight-version spans cover {len(versions)} of {num_tokens} tokens")
    return versions
