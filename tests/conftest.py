"""Shared fixtures. Heavy components (Ray, vLLM, DeepSpeed) live in integration/conftest.py."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test never downloads anything


@pytest.fixture(scope="session")
def calculator_env():
    from envs import make_env

    return make_env("asyncrl/Calculator-v0")


@pytest.fixture(scope="session")
def tiny_tokenizer(calculator_env):
    """A BPE tokenizer trained on calculator demonstrations (well under a second)."""
    from bootstrap.build import build_tokenizer, corpus_template
    from envs.calculator import scripted_episode

    template = corpus_template()
    dialogues = [scripted_episode(calculator_env, s, use_tool=s % 2 == 0) for s in range(300)]
    corpus = [template.render(messages=d, tools=calculator_env.tool_schemas) for d in dialogues]
    return build_tokenizer(corpus, 512)


@pytest.fixture(scope="session")
def codec(tiny_tokenizer, calculator_env):
    from core.chat import ChatCodec

    return ChatCodec(tiny_tokenizer, calculator_env.tool_schemas)
