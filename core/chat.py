"""Token-exact chat rendering: prompts and tool observations as token ids.

This module owns the one rule that keeps multi-turn trajectories honest: the
tokens the engine generated are never re-rendered from text. A conversation's
ids are built by appending, in order, the rendered prompt, each turn's generated
ids (as the engine produced them) and, for each environment reply, the
chat-template *delta* those messages add after an assistant turn, tokenized once.

Images ride along the same way. A message's content may be a list of parts
(`{"type": "image", "image": <PIL.Image>}`, `{"type": "text", "text": ...}`);
the chat template writes the model's image placeholder for each image part, and
`prompt` / `observation` return the ids together with the images (as PNG bytes,
in placeholder order). The ids keep one image token per image: that is what
vLLM must be sent, and it expands each into the image's tokens itself (see
rollout.agent for how the trajectory records the expanded ids).

It also holds the Qwen-style chat template (Qwen3/Hermes tool-call markup) that
the locally bootstrapped tokenizer ships with. Any tokenizer with a chat
template works here; the tokenizer object is passed in, so this module imports
nothing heavy (PIL only once an image is encoded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.images import encode_png, message_images

Message = dict[str, Any]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"

# Special tokens are dropped by `skip_special_tokens`; markup tokens are kept in
# decoded text (they are what the tool-call parser reads), as in Qwen3.
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END]
MARKUP_TOKENS = [TOOL_CALL_OPEN, TOOL_CALL_CLOSE, TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE]

QWEN_VL_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
"""What Qwen2-VL/2.5-VL/3-VL chat templates write for an image part."""


def qwen_style_template(image_placeholder: str = QWEN_VL_IMAGE) -> str:
    """The Qwen-style chat template; an image content part renders as `image_placeholder`
    (the model's own: one image token, which the engine expands per image)."""
    return _QWEN_STYLE.replace("__IMAGE__", image_placeholder.replace("'", "\\'"))


# Qwen2.5/Qwen3-style template (no thinking block): tools are listed in the
# system turn, assistant tool calls are Hermes JSON inside <tool_call> tags and
# consecutive tool results share one user turn inside <tool_response> tags.
# User and tool content may be a string or a list of parts (`{"type": "text",
# "text": ...}`, `{"type": "image", ...}`), as in Qwen-VL's own templates.
_QWEN_STYLE = (
    "{%- macro render_content(content) %}"
    "{%- if content is string %}{{- content }}"
    "{%- else %}{%- for part in content %}"
    "{%- if part.type == 'image' %}{{- '__IMAGE__' }}"
    "{%- elif part.type == 'text' %}{{- part.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{%- endmacro %}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\\n'
    "</tool_call><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}"
    "{%- elif message.role == 'user' %}"
    "{{- '<|im_start|>user\\n' }}{{- render_content(message.content) }}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' + (message.content or '') }}"
    "{%- for call in message.tool_calls or [] %}"
    "{%- set fn = call.function if call.function is defined else call %}"
    "{%- if (message.content or loop.index0 > 0) %}{{- '\\n' }}{%- endif %}"
    '{{- \'<tool_call>\\n{"name": "\' + fn.name + \'", "arguments": \' }}'
    "{%- if fn.arguments is string %}{{- fn.arguments }}{%- else %}{{- fn.arguments | tojson }}"
    "{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- render_content(message.content) }}"
    "{{- '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
QWEN_STYLE_TEMPLATE = qwen_style_template()
BUILTIN_TEMPLATES = {"qwen": QWEN_STYLE_TEMPLATE}
"""Chat templates `model.chat_template` may name. `qwen`: ChatML turns
(<|im_start|>role ... <|im_end|>) with Hermes tool calls in <tool_call> tags; the
tokenizer needs <|im_start|> and <|im_end|> as tokens and <|im_end|> as its eos."""


class ChatTokenizer(Protocol):
    """The slice of a Hugging Face tokenizer the codec uses."""

    eos_token: str | None
    eos_token_id: int | None

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be used for token-exact deltas."""


IMAGE_TOKENS = ("<|image_pad|>", "<image>")
"""Image tokens looked for when the tokenizer does not name its own (`image_token`):
Qwen-VL's and the LLaVA/Idefics family's."""


@dataclass(frozen=True)
class Rendered:
    """Rendered messages: their ids and the images their placeholders stand for."""

    ids: list[int]
    images: tuple[bytes, ...] = ()
    """PNG bytes, one per image token in `ids`, in order."""


class ChatCodec:
    """Renders prompts and observation deltas to ids, and generated ids to text.

    `tools` are the JSON schemas rendered into the system turn; they must be the
    same for the prompt and every later delta, so the codec holds them.
    """

    # A fixed two-turn conversation: the delta of any messages appended after an
    # assistant turn is what the template renders after this conversation's end.
    _BASE: list[Message] = [
        {"role": "user", "content": "."},
        {"role": "assistant", "content": "."},
    ]

    def __init__(
        self,
        tokenizer: ChatTokenizer,
        tools: list[dict] | None = None,
        image_token: str | None = None,
    ):
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError("the tokenizer has no chat template; set one on the model")
        if tokenizer.eos_token is None or tokenizer.eos_token_id is None:
            raise ChatTemplateError("the tokenizer has no eos token; the engine cannot end a turn")
        self.tokenizer = tokenizer
        self.tools = tools or None
        self.end_of_turn = tokenizer.eos_token
        self.image_token_id = _image_token_id(tokenizer, image_token)
        """The token each image is rendered as (None: a text-only model)."""
        self._base_cut = self._end_of_base_turn()

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end an assistant turn (kept as the turn's last generated id)."""
        return [int(self.tokenizer.eos_token_id)]

    def render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages),
            tools=self.tools,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Ids of the opening messages plus the assistant generation prompt."""
        return self.encode(self.render(messages, add_generation_prompt=True))

    def observation_ids(self, messages: Sequence[Message]) -> list[int]:
        """Ids that follow an assistant turn's end-of-turn token when `messages`
        (tool results, user replies) are appended, up to the next generation prompt."""
        full = self.render(self._BASE + list(messages), add_generation_prompt=True)
        if not full.startswith(self._base_cut):
            raise ChatTemplateError(
                "the chat template renders earlier turns differently once messages are "
                "appended, so observation deltas are not well defined"
            )
        return self.encode(full[len(self._base_cut) :])

    def prompt(self, messages: Sequence[Message]) -> Rendered:
        """`prompt_ids` with the images of the messages' image parts."""
        return self._with_images(self.prompt_ids(messages), messages)

    def observation(self, messages: Sequence[Message]) -> Rendered:
        """`observation_ids` with the images of the messages' image parts."""
        return self._with_images(self.observation_ids(messages), messages)

    def dialogue_ids(
        self, messages: Sequence[Message], num_opening: int
    ) -> tuple[list[int], list[int]]:
        """Ids and loss mask of a finished dialogue, built exactly as the agent
        loop builds a trajectory: assistant turns as their own tokens plus the
        end-of-turn id (mask 1), everything else as prompt or deltas (mask 0)."""
        ids = self.prompt_ids(messages[:num_opening])
        mask = [0] * len(ids)
        pending: list[Message] = []
        for message in messages[num_opening:]:
            if message["role"] != "assistant":
                pending.append(message)
                continue
            if pending:
                delta = self.observation_ids(pending)
                ids, mask, pending = ids + delta, mask + [0] * len(delta), []
            turn = self.encode(message["content"]) + self.stop_token_ids
            ids, mask = ids + turn, mask + [1] * len(turn)
        return ids, mask

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of a generated turn, without end-of-turn markers."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _with_images(self, ids: list[int], messages: Sequence[Message]) -> Rendered:
        images = message_images(messages)
        if not images:
            return Rendered(ids)
        if self.image_token_id is None:
            raise ChatTemplateError(
                "these messages carry images but the tokenizer has no image token: "
                "a multimodal environment needs a vision-language model"
            )
        placeholders = ids.count(self.image_token_id)
        if placeholders != len(images):
            raise ChatTemplateError(
                f"the chat template wrote {placeholders} image tokens for {len(images)} "
                f"images; it must write the model's image placeholder once per image part"
            )
        return Rendered(ids, tuple(encode_png(image) for image in images))

    def _end_of_base_turn(self) -> str:
        text = self.render(self._BASE, add_generation_prompt=False)
        end = text.rfind(self.end_of_turn)
        if end < 0:
            raise ChatTemplateError(
                f"the chat template does not end assistant turns with the eos token "
                f"{self.end_of_turn!r}"
            )
        return text[: end + len(self.end_of_turn)]


def _image_token_id(tokenizer: Any, name: str | None) -> int | None:
    """The id of the tokenizer's image token: `name`, else its own `image_token`,
    else the first of IMAGE_TOKENS it has as an added token; None if none."""
    added = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    if name is not None:
        if name not in added:
            raise ChatTemplateError(f"the tokenizer has no image token {name!r}")
        return int(added[name])
    own = getattr(tokenizer, "image_token", None)
    for candidate in ((own,) if isinstance(own, str) else ()) + IMAGE_TOKENS:
        if candidate in added:
            return int(added[candidate])
    return None


DIRECT_TOKENIZER_MODEL_TYPES = ("qwen3", "qwen3_moe")
"""Model types whose checkpoints, when their tokenizer_config.json names the generic
`TokenizersBackend` and no remote code, `load_tokenizer` loads without AutoTokenizer
(AutoTokenizer trusts such a hub class for them: it overrides it only for the model
types in MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS,
transformers/models/auto/tokenization_auto.py:378-430, 843-886)."""


def load_tokenizer(model_path: str) -> Any:
    """The tokenizer AutoTokenizer.from_pretrained(model_path) loads. Importing
    AutoTokenizer imports every model's config and auto-class registry (~3.4 s of
    CPU in each process that needs a tokenizer: the driver, every env pool); for a
    checkpoint that names the generic backend (what transformers writes for the
    policies asyncrl builds) the class is known without it."""
    import json
    from pathlib import Path

    def read(name: str) -> dict[str, Any]:
        path = Path(model_path) / name
        return json.loads(path.read_text()) if path.is_file() else {}

    tokenizer_config = read("tokenizer_config.json")
    if (
        tokenizer_config.get("tokenizer_class") == "TokenizersBackend"
        and "auto_map" not in tokenizer_config
        and read("config.json").get("model_type") in DIRECT_TOKENIZER_MODEL_TYPES
    ):
        from transformers.tokenization_utils_tokenizers import TokenizersBackend

        return TokenizersBackend.from_pretrained(model_path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)
