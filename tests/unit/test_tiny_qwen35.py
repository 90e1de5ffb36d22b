"""Tiny Qwen3.5 policies built from config (bootstrap), and what asyncrl asks of vLLM
for them on CPU (rollout.engine_args, rollout.vllm_plugin)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from bootstrap.build import add_mtp_weights, build_model
from bootstrap.tiny import tiny_policy_dir
from core.config import RolloutConfig, TinyModelConfig
from rollout.engine_args import (
    EngineUnsupported,
    check_linear_attention_dtype,
    linear_attention,
    vllm_args,
)


class Tokenizer:
    """What build_model reads of a tokenizer."""

    eos_token_id, pad_token_id = 1, 0

    def __len__(self) -> int:
        return 300


def _small(**changes) -> TinyModelConfig:
    base = dict(architecture="qwen3_5", hidden_size=64, intermediate_size=128, num_heads=2)
    return TinyModelConfig(**(base | {"num_kv_heads": 1, "moe_intermediate_size": 32} | changes))


def test_qwen3_policies_keep_the_cache_keys_they_had_before_qwen3_5_fields():
    """Fields that shape only a Qwen3.5 policy stay out of a Qwen3 recipe's key: the
    default policy and the test suite's (tests/integration/conftest.py) keep their
    cached directories."""
    cache = Path("/cache")
    assert tiny_policy_dir(TinyModelConfig(), cache, "tiny-qwen3").name == "tiny-qwen3-b0f98a307918"
    test_tiny = TinyModelConfig(demos=600, warmup_steps=40)
    assert tiny_policy_dir(test_tiny, cache, "tiny-qwen3").name == "tiny-qwen3-e8e8b7598ac6"
    hybrid = tiny_policy_dir(_small(), cache, "p")
    assert hybrid != tiny_policy_dir(_small(architecture="qwen3"), cache, "p")
    assert hybrid != tiny_policy_dir(_small(linear_head_dim=128), cache, "p")


@pytest.mark.parametrize("experts", [0, 4])
def test_a_tiny_qwen3_5_has_hybrid_layers_and_mtp_weights_transformers_ignores(experts, tmp_path):
    arch = _small(num_experts=experts, full_attention_interval=2, num_layers=4)
    model = build_model(Tokenizer(), arch, seed=0)
    kind = "Qwen3_5MoeForCausalLM" if experts else "Qwen3_5ForCausalLM"
    assert type(model).__name__ == kind
    assert model.config.layer_types == ["linear_attention", "full_attention"] * 2
    assert model.config.linear_key_head_dim == model.config.linear_value_head_dim == 64
    model.save_pretrained(tmp_path)
    names = add_mtp_weights(model, tmp_path)
    assert "mtp.fc.weight" in names and "mtp.layers.0.self_attn.q_proj.weight" in names
    assert ("mtp.layers.0.mlp.experts.0.down_proj.weight" in names) == bool(experts)
    assert linear_attention(str(tmp_path))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # mtp.* ignored, not an error
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model.eval()(ids).logits)


def test_a_qwen3_model_has_no_mtp_weights_to_add(tmp_path):
    model = build_model(Tokenizer(), _small(architecture="qwen3"), seed=0)
    model.save_pretrained(tmp_path)
    assert add_mtp_weights(model, tmp_path) == []
    assert not linear_attention(str(tmp_path))


def test_a_cpu_engine_of_a_linear_attention_model_must_be_bf16(tmp_path):
    (tmp_path / "config.json").write_text('{"layer_types": ["linear_attention", "full_attention"]}')
    with pytest.raises(EngineUnsupported, match="set model.dtype=bfloat16"):
        check_linear_attention_dtype(str(tmp_path), "float32", gpus_per_worker=0)
    check_linear_attention_dtype(str(tmp_path), "bfloat16", gpus_per_worker=0)
    check_linear_attention_dtype(str(tmp_path), "float32", gpus_per_worker=1)
    (tmp_path / "config.json").write_text('{"model_type": "qwen3"}')
    check_linear_attention_dtype(str(tmp_path), "float32", gpus_per_worker=0)


def test_mtp_on_a_cpu_linear_attention_model_turns_prefix_caching_off(tmp_path):
    hybrid, plain = tmp_path / "hybrid", tmp_path / "plain"
    for directory, config in (
        (hybrid, '{"text_config": {"layer_types": ["linear_attention"]}}'),
        (plain, "{}"),
    ):
        directory.mkdir()
        (directory / "config.json").write_text(config)
    cfg = RolloutConfig()
    cfg.speculative.method = "mtp"
    assert vllm_args(str(hybrid), cfg, "bfloat16", 0)["enable_prefix_caching"] is False
    assert vllm_args(str(plain), cfg, "bfloat16", 0)["enable_prefix_caching"] is True
    cfg.speculative.method = "none"
    assert vllm_args(str(hybrid), cfg, "bfloat16", 0)["enable_prefix_caching"] is True
    cfg.speculative.method, cfg.gpus_per_worker = "mtp", 1
    assert vllm_args(str(hybrid), cfg, "bfloat16", 0)["enable_prefix_caching"] is True


IMPORT_SMART_RESIZE = (
    "from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize; "
    "print(smart_resize.__module__)"
)


def test_the_plugin_lets_the_torchvision_only_qwen2_vl_module_import_as_its_pil_twin():
    """What vLLM's Qwen3.5 models import at load (qwen3_vl.py:38). This machine has no
    torchvision, so the plain import fails: the alias is what makes it work."""
    pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    plain = subprocess.run(
        [sys.executable, "-c", IMPORT_SMART_RESIZE], capture_output=True, text=True, timeout=120
    )
    if plain.returncode == 0:
        pytest.skip("torchvision is installed here: the alias is not needed")
    assert "torchvision" in plain.stderr
    aliased = subprocess.run(
        [
            sys.executable,
            "-c",
            "from rollout.vllm_plugin import alias_qwen2_vl_image_processor as a; "
            "assert a(); " + IMPORT_SMART_RESIZE,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert aliased.returncode == 0, aliased.stderr[-2000:]
    assert aliased.stdout.strip().endswith("image_processing_pil_qwen2_vl")


def test_linear_heads_and_mtp_layers_shape_the_model(tmp_path):
    arch = _small(linear_key_heads=1, linear_value_heads=2, mtp_layers=2)
    model = build_model(Tokenizer(), arch, seed=0)
    config = model.config
    assert (config.linear_num_key_heads, config.linear_num_value_heads) == (1, 2)
    assert config.mtp_num_hidden_layers == 2
    model.save_pretrained(tmp_path)
    names = add_mtp_weights(model, tmp_path)
    assert {n.split(".")[2] for n in names if n.startswith("mtp.layers.")} == {"0", "1"}
    none = _small(mtp_layers=0)
    model = build_model(Tokenizer(), none, seed=0)
    model.save_pretrained(tmp_path / "none")
    assert add_mtp_weights(model, tmp_path / "none") == []


def test_an_exported_policy_keeps_the_mtp_layers_the_learner_never_loads(tmp_path):
    """The learner's save_pretrained drops `mtp.*` (Transformers has no MTP module);
    the run's export carries them over, so MTP speculation serves the final policy."""
    from safetensors.torch import load_file

    from bootstrap.policy import MTP_FILE, carry_mtp_weights

    model = build_model(Tokenizer(), _small(), seed=0)
    model.save_pretrained(tmp_path / "source")
    names = add_mtp_weights(model, tmp_path / "source")
    AutoModelForCausalLM.from_pretrained(tmp_path / "source").save_pretrained(tmp_path / "saved")
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    assert not any(n.startswith("mtp.") for n in saved)
    assert carry_mtp_weights(tmp_path / "source", tmp_path / "saved") == names
    source = load_file(tmp_path / "source" / "model.safetensors")
    carried = load_file(tmp_path / "saved" / MTP_FILE)
    assert all(torch.equal(carried[n], source[n]) for n in names)
    build_model(Tokenizer(), _small(architecture="qwen3"), seed=0).save_pretrained(tmp_path / "q3")
    assert carry_mtp_weights(tmp_path / "q3", tmp_path / "saved") == []  # a Qwen3 has none


def test_a_policy_without_mtp_weights_is_exported_without_importing_torch(tmp_path):
    """The driver exports the final policy's tokenizer and MTP weights at the end of
    every run; it has not imported torch, and a Qwen3 must not make it (~1.6 s)."""
    import subprocess
    import sys

    build_model(Tokenizer(), _small(architecture="qwen3"), seed=0).save_pretrained(tmp_path / "q3")
    probe = (
        "import sys; from pathlib import Path; from bootstrap.policy import carry_mtp_weights; "
        f"assert carry_mtp_weights(Path({str(tmp_path / 'q3')!r}), Path({str(tmp_path)!r})) == []; "
        "print('torch' in sys.modules)"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "False"


def test_ngram_speculation_on_a_cpu_linear_attention_model_is_refused(tmp_path):
    from rollout.engine_args import EngineUnsupported, check_linear_attention_speculation

    build_model(Tokenizer(), _small(), seed=0).save_pretrained(tmp_path / "hybrid")
    build_model(Tokenizer(), _small(architecture="qwen3"), seed=0).save_pretrained(tmp_path / "q3")
    with pytest.raises(EngineUnsupported, match="speculative.method=mtp"):
        check_linear_attention_speculation(str(tmp_path / "hybrid"), "ngram", 0)
    check_linear_attention_speculation(str(tmp_path / "hybrid"), "mtp", 0)
    check_linear_attention_speculation(str(tmp_path / "hybrid"), "ngram", 1)  # a GPU engine
    check_linear_attention_speculation(str(tmp_path / "q3"), "ngram", 0)
