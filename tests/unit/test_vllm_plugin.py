"""The CPU expand-kernel replacement (vllm#55005) against a by-hand expansion."""

from __future__ import annotations

import torch

from rollout.vllm_plugin import expand_to_tokens


def test_expands_each_request_value_over_its_tokens_in_place():
    output = torch.full((7,), -5.0, dtype=torch.float32)
    temperatures = torch.tensor([0.7, -1.0, 1.3], dtype=torch.float32)
    cu_num_tokens = torch.tensor([2, 3, 6], dtype=torch.int32)  # 2, 1 and 3 tokens

    expand_to_tokens(output, temperatures, cu_num_tokens, replace_from=-1.0, replace_to=1.0)

    expected = torch.tensor([0.7, 0.7, 1.0, 1.3, 1.3, 1.3, -5.0])
    assert torch.allclose(output, expected)
    assert output.dtype == torch.float32


def test_keeps_integer_output_dtype():
    output = torch.zeros(4, dtype=torch.int32)
    top_k = torch.tensor([0, 5], dtype=torch.int32)
    expand_to_tokens(output, top_k, torch.tensor([1, 4]), replace_from=0, replace_to=50)
    assert output.tolist() == [50, 5, 5, 5]
