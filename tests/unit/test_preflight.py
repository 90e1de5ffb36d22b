"""orchestrator.preflight: a checkpoint and an env that do not fit are refused in
one line before anything starts; what does fit comes out resolved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import pytest

from bootstrap.policy import export_tokenizer, resolve_policy
from bootstrap.tiny import ensure_tiny_policy
from core.chat import QWEN_STYLE_TEMPLATE
from core.config import AUTO_MAX_MODEL_LEN, Config, ConfigError
from envs import EnvConfigError
from orchestrator.preflight import (
    EnvProbeError,
    chat_codec,
    context_length,
    model_context_length,
    preflight,
    probe_env,
)
from tests.integration.conftest import TEST_TINY


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    cache = Path("~/.cache/asyncrl/models").expanduser()
    return Path(ensure_tiny_policy(TEST_TINY, cache, "tiny-qwen3"))


def bare_checkpoint(tiny: Path, target: Path, positions: int = 128) -> Path:
    """The tiny policy as a user might bring it: no chat template, `positions` long."""
    target.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(tiny / name, target / name)
    config = json.loads((target / "config.json").read_text())
    config["max_position_embeddings"] = positions
    (target / "config.json").write_text(json.dumps(config))
    tokenizer = json.loads((tiny / "tokenizer_config.json").read_text())
    tokenizer.pop("chat_template", None)
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    return target


def user_config(path: Path, **model) -> Config:
    cfg = Config()
    cfg.model.path = str(path)
    cfg.model.cache_dir = str(path.parent / "cache")
    cfg.rollout.max_model_len = None
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


def test_context_length_defaults_to_the_models_own_capped():
    assert context_length(None, 128) == 128
    assert context_length(None, 40960) == AUTO_MAX_MODEL_LEN
    assert context_length(None, None) == AUTO_MAX_MODEL_LEN
    assert context_length(100, 128) == 100
    with pytest.raises(ConfigError, match=r"rollout.max_model_len=1024 .*\(128 positions\)"):
        context_length(1024, 128)


def test_model_context_length_reads_config_and_tokenizer(tmp_path, tiny):
    checkpoint = bare_checkpoint(tiny, tmp_path / "ckpt", positions=128)
    assert model_context_length(str(checkpoint)) == 128
    assert model_context_length(str(tiny)) == 2048
    config = json.loads((checkpoint / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "linear", "factor": 4.0}
    (checkpoint / "config.json").write_text(json.dumps(config))
    assert model_context_length(str(checkpoint)) == 512


def test_checkpoint_without_template_is_one_line_then_fixed_by_a_builtin(tmp_path, tiny):
    checkpoint = bare_checkpoint(tiny, tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="no chat template.*model.chat_template=qwen") as info:
        preflight(user_config(checkpoint))
    assert "\n" not in str(info.value)
    checked = preflight(user_config(checkpoint, chat_template="qwen"))
    assert checked.max_model_len == 128
    assert (Path(checked.model_path) / "chat_template.jinja").read_text() == QWEN_STYLE_TEMPLATE
    assert not (checkpoint / "chat_template.jinja").exists()  # the user's dir is untouched


def test_chat_template_from_a_file_and_a_bad_name(tmp_path, tiny):
    checkpoint = bare_checkpoint(tiny, tmp_path / "ckpt")
    template = tmp_path / "mine.jinja"
    template.write_text(QWEN_STYLE_TEMPLATE)
    path = resolve_policy(user_config(checkpoint, chat_template=str(template)).model)
    assert (Path(path) / "chat_template.jinja").read_text() == QWEN_STYLE_TEMPLATE
    with pytest.raises(ConfigError, match="neither a built-in template"):
        resolve_policy(user_config(checkpoint, chat_template="llama9").model)


def test_explicit_context_above_the_models_is_refused(tmp_path, tiny):
    cfg = user_config(bare_checkpoint(tiny, tmp_path / "ckpt"), chat_template="qwen")
    cfg.rollout.max_model_len = 1024
    with pytest.raises(ConfigError, match="above the model's own context length"):
        preflight(cfg)


def test_tokenizer_whose_eos_does_not_end_the_templates_turns(tmp_path, tiny):
    checkpoint = bare_checkpoint(tiny, tmp_path / "ckpt")
    tokenizer = json.loads((checkpoint / "tokenizer_config.json").read_text())
    tokenizer["eos_token"] = "<|endoftext|>"
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    path = resolve_policy(user_config(checkpoint, chat_template="qwen").model)
    with pytest.raises(ConfigError, match="eos_token") as info:
        chat_codec(path, None, str(checkpoint))
    assert "\n" not in str(info.value)


def test_tool_markup_dropped_by_decoding_is_refused(tmp_path, tiny):
    """<tool_call> registered as a special token vanishes from decoded turns."""
    checkpoint = bare_checkpoint(tiny, tmp_path / "ckpt")
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    for token in tokenizer["added_tokens"]:
        if token["content"] in ("<tool_call>", "</tool_call>"):
            token["special"] = True
    (checkpoint / "tokenizer.json").write_text(json.dumps(tokenizer))
    path = resolve_policy(user_config(checkpoint, chat_template="qwen").model)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    chat_codec(path, None, str(checkpoint))  # no tools: fine
    with pytest.raises(ConfigError, match="drops <tool_call>"):
        chat_codec(path, tools, str(checkpoint))


class _Env(gym.Env):
    """A single-turn env whose reset, step and reward can be made wrong."""

    def __init__(self, reset=None, reward=1.0, prompt="What is 2 + 2?"):
        self._reset, self._reward, self._prompt = reset, reward, prompt

    def reset(self, *, seed=None, options=None):
        if self._reset is not None:
            raise self._reset
        return [{"role": "user", "content": self._prompt}], {}

    def step(self, action):
        return [], self._reward, True, False, {}


@pytest.fixture(scope="module")
def codec(tiny):
    return chat_codec(str(tiny), None, None)


def test_env_probe_accepts_a_fitting_env(codec):
    probe_env(_Env(), codec, 128, "mine")


@pytest.mark.parametrize(
    "env, needle",
    [
        (_Env(reward="1.0"), "reward '1.0'"),
        (_Env(reward=float("nan")), "reward nan"),
        (_Env(reward={"correct": 1.0}), "finite number"),
        (_Env(prompt="seven " * 200), "leaves no room to generate"),
    ],
)
def test_env_probe_refuses_what_does_not_fit(codec, env, needle):
    with pytest.raises(EnvConfigError, match=needle) as info:
        probe_env(env, codec, 128, "mine")
    assert "\n" not in str(info.value)


def test_env_that_raises_is_reported_with_its_own_traceback(codec):
    with pytest.raises(EnvProbeError, match="reset.*raised KeyError") as info:
        probe_env(_Env(reset=KeyError("dataset")), codec, 128, "mine")
    assert "Traceback" in info.value.details and "KeyError" in info.value.details


def test_env_whose_observation_is_not_messages(codec):
    class Text(_Env):
        def reset(self, *, seed=None, options=None):
            return "What is 2 + 2?", {}

    with pytest.raises(EnvConfigError, match="chat messages"):
        probe_env(Text(), codec, 128, "mine")


def test_exported_tokenizer_loads_beside_the_weights(tmp_path, tiny):
    from transformers import AutoTokenizer

    export_tokenizer(str(tiny), str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.chat_template == QWEN_STYLE_TEMPLATE
    assert len(tokenizer.encode("What is 12 + 3?")) > 3


@pytest.mark.parametrize("model_type", ["qwen3", "qwen3_moe"])
def test_load_tokenizer_gives_what_autotokenizer_gives(tmp_path, tiny, model_type):
    """Without importing AutoTokenizer where the checkpoint names the generic backend:
    the same class, vocabulary, chat template and token ids."""
    from transformers import AutoTokenizer

    from core.chat import load_tokenizer

    checkpoint = tmp_path / model_type
    shutil.copytree(tiny, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps(config | {"model_type": model_type}))
    theirs, ours = AutoTokenizer.from_pretrained(checkpoint), load_tokenizer(str(checkpoint))
    assert type(ours) is type(theirs)
    assert ours.get_vocab() == theirs.get_vocab() and ours.chat_template == theirs.chat_template
    assert ours.all_special_ids == theirs.all_special_ids
    messages = [{"role": "user", "content": "What is 2 + 2? <tool_call>"}]
    rendered = ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == theirs.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert ours(rendered)["input_ids"] == theirs(rendered)["input_ids"]


def test_load_tokenizer_leaves_every_other_checkpoint_to_autotokenizer(tmp_path, tiny, monkeypatch):
    import transformers

    from core.chat import load_tokenizer

    checkpoint = tmp_path / "other"
    shutil.copytree(tiny, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps(config | {"model_type": "deepseek_v3"}))
    asked: list[str] = []

    class Recording:
        @staticmethod
        def from_pretrained(path):
            asked.append(str(path))
            return "autotokenizer's"

    monkeypatch.setattr(transformers, "AutoTokenizer", Recording)
    assert load_tokenizer(str(checkpoint)) == "autotokenizer's" and asked == [str(checkpoint)]
    assert load_tokenizer(str(tiny)) != "autotokenizer's"  # the tiny policy: direct
