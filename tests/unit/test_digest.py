"""Weight digests (core.digest) and the snapshot's checksums (core.shm): equal
weights give equal digests, one changed element changes them, and what must not
matter (memory layout, where a tensor's bytes sit) does not; rollout.loaded_weights
finds each learner tensor among a vLLM-style model's fused parameters; bf16 engines
confirm an fp32 learner's weights through the checksums of their bf16 casts."""

from __future__ import annotations

import time

import pytest
import torch

from core.digest import combine, tensor_checksum
from core.records import SyncResult
from core.shm import write_snapshot
from orchestrator.fleet import WeightMismatch, confirm
from rollout.loaded_weights import _back_to_back, locate


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": torch.randn(10, 4, generator=generator),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 4, generator=generator),
        "model.norm.weight": torch.randn(4, generator=generator).to(torch.bfloat16),
    }


def test_same_weights_same_digest_and_one_changed_element_changes_it(tmp_path):
    first = write_snapshot(tmp_path / "a.bin", _weights().items(), 1)
    again = write_snapshot(tmp_path / "b.bin", _weights().items(), 1)
    assert first.digest == again.digest
    for name in _weights():
        changed = _weights()
        changed[name].view(-1)[-1] = changed[name].view(-1)[-1] * 1.0001 + 1e-3
        other = write_snapshot(tmp_path / "c.bin", changed.items(), 1)
        assert other.digest != first.digest, name
        differing = [
            a.name
            for a, b in zip(first.entries, other.entries, strict=True)
            if a.checksum != b.checksum
        ]
        assert differing == [name]


def test_a_one_ulp_change_anywhere_in_a_tensor_is_seen():
    weights = torch.randn(1000)
    reference = tensor_checksum(weights)
    for index in (0, 1, 499, 999):
        bumped = weights.clone()
        bumped.view(torch.int32)[index] += 1  # the next float
        assert tensor_checksum(bumped) != reference


def test_snapshot_checksums_are_the_tensors_checksums_whatever_their_layout(tmp_path):
    weights = _weights()
    transposed = weights["model.layers.0.self_attn.q_proj.weight"].t().contiguous().t()
    assert not transposed.is_contiguous()
    weights["model.layers.0.self_attn.q_proj.weight"] = transposed
    snapshot = write_snapshot(tmp_path / "a.bin", weights.items(), 3)
    for entry in snapshot.entries:
        assert entry.checksum == tensor_checksum(_weights()[entry.name])


def test_a_slice_of_a_fused_parameter_checksums_as_the_tensor_it_holds():
    q, k, v = torch.randn(8, 4), torch.randn(2, 4), torch.randn(2, 4)
    qkv = torch.cat([q, k, v])
    assert tensor_checksum(qkv.narrow(0, 8, 2)) == tensor_checksum(k)
    assert tensor_checksum(qkv.narrow(0, 0, 8)) == tensor_checksum(q)


def test_the_digest_covers_names_dtypes_shapes_and_order():
    base = [("a", "float32", (2,), 1), ("b", "float32", (2,), 2)]
    assert combine(base) == combine(list(base))
    assert combine(base[::-1]) != combine(base)
    assert combine([("a", "bfloat16", (2,), 1), base[1]]) != combine(base)
    assert combine([("a", "float32", (1, 2), 1), base[1]]) != combine(base)
    assert combine([("x", "float32", (2,), 1), base[1]]) != combine(base)


class _Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv_proj = torch.nn.Linear(4, 12, bias=False)


class _Model(torch.nn.Module):
    """The names a vLLM Qwen3 uses: fused qkv_proj and its packed_modules_mapping
    (vllm/model_executor/models/qwen3.py:284-287)."""

    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }

    def __init__(self):
        super().__init__()
        self.attn = _Attention()
        self.norm = torch.nn.LayerNorm(4)


def test_learner_names_are_located_in_fused_parameters():
    model = _Model()
    modules = dict(model.named_modules())
    assert locate(model, modules, "attn.q_proj.weight") == ("attn.qkv_proj.weight", 0)
    assert locate(model, modules, "attn.v_proj.weight") == ("attn.qkv_proj.weight", 2)
    assert locate(model, modules, "norm.weight") == ("norm.weight", 0)
    assert locate(model, modules, "attn.o_proj.weight") is None
    assert locate(model, modules, "mlp.up_proj.weight") is None


@pytest.mark.parametrize("megabytes", [4, 43])
def test_checksumming_a_snapshot_is_cheap(tmp_path, megabytes):
    """Write with checksums vs the same bytes' CRC alone: the checksum is a small
    part of an export (392 MB-class sizes are measured in the report, not here)."""
    tensor = torch.randn(megabytes * 2**20 // 4)
    started = time.perf_counter()
    checksum = tensor_checksum(tensor)
    seconds = time.perf_counter() - started
    assert checksum == write_snapshot(tmp_path / "s.bin", [("w", tensor)], 1).entries[0].checksum
    assert seconds < 0.05 * megabytes  # ~0.25 ms per MB measured here; 50 ms/MB is a hang


def test_a_snapshot_for_bf16_engines_records_the_checksum_of_each_fp32_tensors_cast(tmp_path):
    weights = _weights()
    snapshot = write_snapshot(tmp_path / "a.bin", weights.items(), 1, "bfloat16")
    plain = write_snapshot(tmp_path / "b.bin", weights.items(), 1)
    for entry in snapshot.entries:
        tensor = weights[entry.name]
        if tensor.dtype == torch.float32:
            assert entry.held_dtype == "bfloat16"
            assert entry.held_checksum == tensor_checksum(tensor.to(torch.bfloat16))
        else:  # already bf16: nothing narrower to cast to
            assert entry.served_dtype is None and entry.held_checksum == entry.checksum
    assert snapshot.digest == plain.digest  # the learner's own bytes are unchanged
    assert all(e.served_dtype is None for e in plain.entries)
    assert plain.held_digest == plain.digest


def _sync(snapshot, checksums) -> SyncResult:
    return SyncResult(
        version=snapshot.version,
        pause_s=0.0,
        load_s=0.0,
        drain_s=0.0,
        bytes=snapshot.total_bytes,
        checksums=tuple(checksums),
    )


def test_a_bf16_engine_is_confirmed_by_its_casts_and_refused_for_another_weight(tmp_path):
    weights = _weights()
    snapshot = write_snapshot(tmp_path / "a.bin", weights.items(), 1, "bfloat16")
    held = {name: t.to(torch.bfloat16) for name, t in weights.items()}
    right = [tensor_checksum(held[e.name]) for e in snapshot.entries]
    confirm("w", _sync(snapshot, right), snapshot)

    name = "model.layers.0.self_attn.q_proj.weight"
    held[name] = held[name].clone()
    held[name].view(torch.int16)[0, 0] += 1  # one bf16 ulp
    wrong = [tensor_checksum(held[e.name]) for e in snapshot.entries]
    with pytest.raises(WeightMismatch, match=name):
        confirm("w", _sync(snapshot, wrong), snapshot)
    # the fp32 learner's own checksums are not what a bf16 engine holds
    with pytest.raises(WeightMismatch):
        confirm("w", _sync(snapshot, [e.checksum for e in snapshot.entries]), snapshot)


def test_a_merged_layer_whose_parts_span_several_output_sizes_is_cut_by_their_rows():
    """Qwen3.5's in_proj_qkvz: output sizes q, k, v, z; learner tensors qkv and z."""
    qkv, z = torch.randn(12, 4), torch.randn(8, 4)
    fused = torch.cat([qkv, z])
    cut = _back_to_back(fused, [12, 8])
    assert [tensor_checksum(p) for p in cut] == [tensor_checksum(qkv), tensor_checksum(z)]
    assert _back_to_back(fused, [12, 4]) == [None, None]  # rows that do not cover it


class _Experts(torch.nn.Module):
    """vLLM's RoutedExperts: all experts' gate/up in w13_weight, down in w2_weight."""

    def __init__(self, local: int = 4):
        super().__init__()
        self.global_num_experts, self.local_num_experts = 4, local
        self.w13_weight = torch.nn.Parameter(torch.zeros(4, 6, 4))
        self.w2_weight = torch.nn.Parameter(torch.zeros(4, 4, 3))


class _Runner(torch.nn.Module):
    """vLLM's MoE runner at the model's `experts` name (fused_moe/runner/moe_runner.py)."""

    def __init__(self, local: int = 4):
        super().__init__()
        self.routed_experts = _Experts(local)


def test_fused_expert_tensors_are_located_in_the_moe_layers_parameters():
    model = torch.nn.Module()
    model.experts = _Runner()
    model.sharded = _Runner(local=2)  # expert parallel: holds half, stays unconfirmed
    modules = dict(model.named_modules())
    located = locate(model, modules, "experts.gate_up_proj")
    assert located == ("experts.routed_experts.w13_weight", 0)
    assert locate(model, modules, "experts.down_proj") == ("experts.routed_experts.w2_weight", 0)
    assert locate(model, modules, "sharded.gate_up_proj") is None
