"""Token-exact chat rendering: prompts and tool observations as token ids.

This module owns the one rule that keeps multi-turn trajectories honest: the
tokens the engine generated are never re-rendered from text. A conversation's
ids are built by appending, in order, the rendered prompt, each turn's generated
ids (as the engine produced them) and, for each environment reply, the
chat-template *delta* those messages add after an assistant turn, tokenized once.

It also holds the Qwen-style chat template (Qwen3/Hermes tool-call markup) that
the locally bootstrapped tokenizer ships with. Any tokenizer with a chat
template works here; the tokenizer object is passed in, so this module imports
nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

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

# Qwen2.5/Qwen3-style template (no thinking block): tools are listed in the
# system turn, assistant tool calls are Hermes JSON inside <tool_call> tags and
# consecutive tool results share one user turn inside <tool_response> tags.
QWEN_STYLE_TEMPLATE = (
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
    "{{- '<|im_start|>user\\n' + message.content + '<|im_end|>\\n' }}"
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
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


class ChatTokenizer(Protocol):
    """The slice of a Hugging Face tokenizer the codec uses."""

    eos_token: str | None
    eos_token_id: int | None

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be used for token-exact deltas."""


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

    def __init__(self, tokenizer: ChatTokenizer, tools: list[dict] | None = None):
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError("the tokenizer has no chat template; set one on the model")
        if tokenizer.eos_token is None or tokenizer.eos_token_id is None:
            raise ChatTemplateError("the tokenizer has no eos token; the engine cannot end a turn")
        self.tokenizer = tokenizer
        self.tools = tools or None
        self.end_of_turn = tokenizer.eos_token
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

    def _end_of_base_turn(self) -> str:
        text = self.render(self._BASE, add_generation_prompt=False)
        end = text.rfind(self.end_of_turn)
        if end < 0:
            raise ChatTemplateError(
                f"the chat template does not end assistant turns with the eos token "
                f"{self.end_of_turn!r}"
            )
        return text[: end + len(self.end_of_turn)]
