"""GSPO (Qwen's Group Sequence Policy Optimization): one ratio per sequence,
the length-normalised sequence likelihood ratio
    s_i = exp(mean_t log(pi_theta(y_t) / pi_old(y_t))),
clipped per sequence (tight range, 3e-4 / 4e-4), losses averaged per sequence.

Written in the GSPO-token form, s_i,t = sg[s_i] * pi_theta(y_t) / sg[pi_theta(y_t)]:
the same value as s_i on every token, and with seq-mean-token-mean weights the
same gradient as the sequence-level objective."""

from __future__ import annotations

import torch

from learner.algos.base import ClippedSurrogate, PolicyInputs


class GSPO(ClippedSurrogate):
    name = "gspo"
    default_clip = (3e-4, 4e-4)
    default_agg = "seq-mean-token-mean"

    def ratio(self, log_ratio: torch.Tensor, inputs: PolicyInputs) -> torch.Tensor:
        ids = inputs.sequence_ids
        if ids is None:
            ids = torch.zeros_like(log_ratio, dtype=torch.long)
        count = int(ids.max()) + 1 if ids.numel() else 0
        sums = torch.zeros(count, dtype=log_ratio.dtype).index_add(0, ids, log_ratio.detach())
        lengths = torch.zeros(count, dtype=log_ratio.dtype).index_add(
            0, ids, torch.ones_like(log_ratio)
        )
        sequence_log_ratio = (sums / lengths.clamp(min=1))[ids]
        return torch.exp(sequence_log_ratio + log_ratio - log_ratio.detach())
