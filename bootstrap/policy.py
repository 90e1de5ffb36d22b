"""Which policy a run starts from: a given checkpoint, or the tiny local one.

`resolve_policy` returns a local directory that vLLM and transformers both
load. A `model.path` is used as given (a directory, or a hub id already in the
local Hugging Face cache: this never downloads weights). Without a path, the
tiny Qwen3 policy is built once and cached under `model.cache_dir`
(bootstrap.tiny).

With `model.chat_template` set, the run sees the checkpoint through a directory
of links to its files plus that template (`chat_template.jinja`, which
transformers reads before tokenizer_config.json's): the user's checkpoint is
never changed, and every process (engines, env pools, learner, the exported
final model) loads the same tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bootstrap.cache import cached_build
from bootstrap.tiny import ensure_tiny_policy
from core.chat import BUILTIN_TEMPLATES, load_tokenizer
from core.config import ConfigError, ModelConfig

CHAT_TEMPLATE_FILE = "chat_template.jinja"
"""Where transformers 5 keeps a tokenizer's template (read over tokenizer_config.json's:
transformers/tokenization_utils_base.py:1786-1799)."""


def resolve_policy(cfg: ModelConfig) -> str:
    """The directory the run loads: model.path or the tiny policy, with model.chat_template."""
    if cfg.path:
        path = _existing_checkpoint(cfg.path)
    else:
        path = ensure_tiny_policy(cfg.tiny, Path(cfg.cache_dir).expanduser(), cfg.name)
    if cfg.chat_template is None:
        return path
    template = chat_template_source(cfg.chat_template)
    return with_chat_template(Path(path), template, Path(cfg.cache_dir).expanduser())


def chat_template_source(choice: str) -> str:
    """model.chat_template's text: a built-in template by name, or a file's content."""
    if choice in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[choice]
    file = Path(choice).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"model.chat_template={choice!r} is neither a built-in template "
            f"({', '.join(sorted(BUILTIN_TEMPLATES))}) nor a file"
        )
    return file.read_text()


def with_chat_template(checkpoint: Path, template: str, cache_dir: Path) -> str:
    """A directory that links every file of `checkpoint` and adds `template` as its
    chat_template.jinja; cached by checkpoint path and template."""
    key = json.dumps({"checkpoint": str(checkpoint.resolve()), "template": template})
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    target = cache_dir / "with-template" / f"{checkpoint.name}-{digest}"

    def build(staging: Path) -> None:
        for item in checkpoint.iterdir():
            if item.name not in (CHAT_TEMPLATE_FILE, "chat_template", "READY"):
                (staging / item.name).symlink_to(item.resolve())
        (staging / CHAT_TEMPLATE_FILE).write_text(template)

    return cached_build(target, build)


PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
"""A vision-language checkpoint's processor settings (image processor, image tokens)."""
MTP_PREFIX = "mtp."
MTP_FILE = "mtp.safetensors"


def export_tokenizer(model_path: str, directory: str) -> None:
    """Write what the policy has beside its weights into `directory`, so exported
    weights load on their own with transformers and vLLM: the tokenizer (files and
    chat template), a vision-language model's processor settings, and the
    multi-token-prediction layers (`mtp.*`), which the learner neither loads nor
    trains (Transformers has no MTP module), carried over unchanged so that
    `rollout.speculative.method=mtp` serves the exported policy too."""
    import shutil

    load_tokenizer(model_path).save_pretrained(directory)
    for name in PROCESSOR_FILES:
        if (Path(model_path) / name).is_file():
            shutil.copyfile(Path(model_path) / name, Path(directory) / name)
    carry_mtp_weights(Path(model_path), Path(directory))


def carry_mtp_weights(source: Path, target: Path) -> list[str]:
    """Copy `source`'s `mtp.*` tensors into `target` as their own safetensors file
    (listed in `target`'s shard index when it has one); returns their names. A
    policy without them costs a read of each shard's header: torch is not imported
    (the driver that exports a run's final policy has not imported it: ~1.6 s)."""
    shards = {shard: _mtp_names(shard) for shard in sorted(source.glob("*.safetensors"))}
    if not any(shards.values()):
        return []
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors = {}
    for shard, names in shards.items():
        with safe_open(str(shard), framework="pt") as handle:
            tensors |= {name: handle.get_tensor(name) for name in names}
    save_file(tensors, str(target / MTP_FILE), metadata={"format": "pt"})
    index = target / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data.setdefault("weight_map", {}).update(dict.fromkeys(tensors, MTP_FILE))
        index.write_text(json.dumps(data, indent=2))
    return sorted(tensors)


def _mtp_names(shard: Path) -> list[str]:
    """The `mtp.*` tensors `shard` holds, from its header (numpy: no torch)."""
    from safetensors import safe_open

    with safe_open(str(shard), framework="numpy") as handle:
        return [name for name in handle.keys() if name.startswith(MTP_PREFIX)]  # noqa: SIM118


def _existing_checkpoint(path: str) -> str:
    local = Path(path).expanduser()
    if local.is_dir():
        return str(local)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any miss means "not here"
        raise ConfigError(
            f"model.path={path!r} is neither a directory nor a model in the local Hugging Face "
            f"cache; asyncrl never downloads weights at run time: fetch it first "
            f"(`huggingface-cli download {path}`) or point model.path at a directory"
        ) from exc
