"""ToolEnv: the gymnasium environment every tool-using agent task derives from.

Owns the episode protocol between an assistant and its tools: chat messages as
observations, tool-call parsing, tool execution with timeouts and bounded
retries, the turn limit, and scoring the finished conversation with a reward
function. It knows nothing about tokens, engines or actors.

Who is at fault decides what happens:
- a malformed call, an unknown tool or bad arguments are the *model's* mistakes:
  they come back to the model as a tool message and are counted, never raised;
- a tool that crashes or times out is the *environment's* fault: retried up to
  `tool_retries` times, then the episode ends as failed (not scored as the
  model's failure).
"""

from __future__ import annotations

import asyncio
import json
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from core.images import is_image
from envs.toolcall import ParsedTurn, parse_tool_calls
from rewards import RewardSpec, resolve_reward, score

Message = dict[str, str]
MAX_TEXT = 1 << 20
PRINTABLE = "".join(chr(c) for c in range(32, 127)) + "\n"
"""What AnyText samples from (built once: every env makes several spaces)."""


class AnyText(spaces.Text):
    """A Text space that holds any string a model or tool can produce.

    gymnasium's Text defaults to an alphanumeric charset and min_length=1, which
    rejects ordinary model output; sampling still uses a printable charset.
    """

    def __init__(self, max_length: int = MAX_TEXT):
        super().__init__(max_length=max_length, min_length=0, charset=PRINTABLE)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length


class ChatContent(AnyText):
    """Message content: a string, or a list of parts in the Hugging Face chat style,
    `{"type": "text", "text": str}` and `{"type": "image", "image": <PIL.Image>}`.

    Sampling gives text (a sampled image would say nothing about an env)."""

    def contains(self, x: Any) -> bool:
        if isinstance(x, str):
            return len(x) <= self.max_length
        return isinstance(x, list | tuple) and all(_is_content_part(part) for part in x)


def _is_content_part(part: Any) -> bool:
    if not isinstance(part, dict):
        return False
    if part.get("type") == "text":
        return set(part) == {"type", "text"} and isinstance(part["text"], str)
    return (
        part.get("type") == "image" and set(part) == {"type", "image"} and is_image(part["image"])
    )


def chat_space(multimodal: bool = False) -> spaces.Sequence:
    """Observation space: a tuple of chat messages ({"role", "content"}); with
    `multimodal`, content may also be a list of text and image parts."""
    content = ChatContent() if multimodal else AnyText()
    return spaces.Sequence(spaces.Dict({"role": AnyText(64), "content": content}))


def shows_images(env: Any) -> bool:
    """Whether `env`'s observations may carry images (a `chat_space(multimodal=True)`)."""
    space = getattr(env, "observation_space", None)
    feature = getattr(space, "feature_space", None)
    content = getattr(feature, "spaces", {}).get("content")
    return isinstance(content, ChatContent)


class ToolArgumentError(ValueError):
    """Raised by a tool when the model called it wrongly (shown to the model)."""


class ToolFault(RuntimeError):
    """A tool failed for reasons that are not the model's fault."""


class Tool(Protocol):
    name: str
    schema: dict[str, Any]
    """OpenAI-style function schema, rendered into the chat template."""

    async def __call__(self, **arguments: Any) -> str: ...


@dataclass
class EpisodeStats:
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tool_error_kinds: dict[str, int] = field(default_factory=dict)
    failure: str | None = None

    def count_error(self, kind: str) -> None:
        self.tool_errors += 1
        self.tool_error_kinds[kind] = self.tool_error_kinds.get(kind, 0) + 1


class ToolEnv(gym.Env):
    """A chat episode with tools; subclasses supply tasks, prompts and tools.

    `reset` returns the opening messages; `step(assistant_text)` returns the
    tool messages it caused. The episode ends on a turn without tool calls (the
    final answer), on `max_turns`, or on an infrastructure failure.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        reward_fn: RewardSpec,
        reward_weights: dict[str, float] | None = None,
        max_turns: int = 4,
        tool_timeout_s: float = 10.0,
        tool_retries: int = 2,
    ):
        self.observation_space = chat_space()
        self.action_space = AnyText()
        self.reward_fn = resolve_reward(reward_fn)
        self.reward_weights = dict(reward_weights or {})
        self.max_turns = max_turns
        self.tool_timeout_s = tool_timeout_s
        self.tool_retries = tool_retries
        self._tools = {tool.name: tool for tool in self.make_tools()}
        self.task: dict[str, Any] = {}
        self.messages: list[Message] = []
        self.stats = EpisodeStats()
        self._done = True

    # -- what a subclass provides -------------------------------------------------

    @abstractmethod
    def sample_task(self, rng: np.random.Generator) -> dict[str, Any]:
        """A task dict; whatever the reward function needs (e.g. "answer")."""

    @abstractmethod
    def opening_messages(self, task: dict[str, Any]) -> list[Message]:
        """The system/user messages that open an episode."""

    def make_tools(self) -> list[Tool]:
        return []

    # -- gymnasium API ----------------------------------------------------------------

    @property
    def tool_schemas(self) -> list[dict[str, Any]]:
        return [tool.schema for tool in self._tools.values()]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[Message, ...], dict[str, Any]]:
        super().reset(seed=seed)
        self.task = self.sample_task(self.np_random)
        self.messages = [dict(m) for m in self.opening_messages(self.task)]
        self.stats = EpisodeStats()
        self._done = False
        return tuple(dict(m) for m in self.messages), {"task": dict(self.task)}

    def step(self, action: str) -> tuple[tuple[Message, ...], float, bool, bool, dict[str, Any]]:
        """Synchronous step (gymnasium API); code inside an event loop should await `astep`."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.astep(action))
        with ThreadPoolExecutor(max_workers=1) as thread:  # this thread's loop is busy
            return thread.submit(asyncio.run, self.astep(action)).result()

    async def astep(
        self, action: str
    ) -> tuple[tuple[Message, ...], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        self.stats.turns += 1
        self.messages.append({"role": "assistant", "content": action})
        turn = parse_tool_calls(action)
        if not turn.attempted_tool_use:
            return await self._finish(terminated=True, truncated=False)
        replies = await self._run_tools(turn)
        self.messages.extend(replies)
        if self.stats.failure is not None:
            return await self._finish(terminated=True, truncated=False, observation=replies)
        if self.stats.turns >= self.max_turns:
            return await self._finish(terminated=False, truncated=True, observation=replies)
        return tuple(replies), 0.0, False, False, self._info()

    # -- internals ----------------------------------------------------------------------

    async def _run_tools(self, turn: ParsedTurn) -> list[Message]:
        replies: list[Message] = []
        for error in turn.errors:
            self.stats.count_error(error.kind)
            replies.append(_tool_message(f"Error: {error.message}"))
        for call in turn.calls:
            self.stats.tool_calls += 1
            tool = self._tools.get(call.name)
            if tool is None:
                self.stats.count_error("unknown_tool")
                known = ", ".join(sorted(self._tools)) or "none"
                replies.append(_tool_message(f"Error: unknown tool {call.name!r} (tools: {known})"))
                continue
            replies.append(_tool_message(await self._call_tool(tool, call.arguments)))
            if self.stats.failure is not None:
                break
        return replies

    async def _call_tool(self, tool: Tool, arguments: dict[str, Any]) -> str:
        last_fault = ""
        for _ in range(1 + self.tool_retries):
            try:
                return await asyncio.wait_for(tool(**arguments), self.tool_timeout_s)
            except ToolArgumentError as exc:
                self.stats.count_error("bad_arguments")
                return f"Error: {exc}"
            except TypeError as exc:
                self.stats.count_error("bad_arguments")
                return f"Error: wrong arguments for {tool.name}: {exc}"
            except TimeoutError:
                last_fault = f"tool {tool.name} timed out after {self.tool_timeout_s}s"
            except Exception as exc:  # noqa: BLE001 - any other crash is the tool's fault
                last_fault = f"tool {tool.name} crashed: {type(exc).__name__}: {exc}"
        self.stats.failure = last_fault
        return f"Error: {last_fault}"

    async def _finish(
        self,
        terminated: bool,
        truncated: bool,
        observation: list[Message] | None = None,
    ) -> tuple[tuple[Message, ...], float, bool, bool, dict[str, Any]]:
        self._done = True
        total, components = 0.0, None
        if self.stats.failure is None:
            total, components = await self._score()
        info = self._info()
        if components is not None:
            info["reward_components"] = components
        return tuple(observation or ()), total, terminated, truncated, info

    async def _score(self) -> tuple[float, dict[str, float] | None]:
        """Score off the event loop (rewards may run tests or a CAS). A reward
        that crashes is the environment's fault: the episode fails, unscored."""
        try:
            return await asyncio.to_thread(
                score, self.reward_fn, self.messages, self.task, self.reward_weights
            )
        except Exception as exc:  # noqa: BLE001 - any reward crash fails the episode
            self.stats.failure = f"reward {_name_of(self.reward_fn)} crashed: {exc!r}"[:500]
            return 0.0, None

    def _info(self) -> dict[str, Any]:
        return {
            "turns": self.stats.turns,
            "tool_calls": self.stats.tool_calls,
            "tool_errors": self.stats.tool_errors,
            "tool_error_kinds": dict(self.stats.tool_error_kinds),
            "failure": self.stats.failure,
        }


def _name_of(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _tool_message(content: str) -> Message:
    return {"role": "tool", "content": content}


def tool_schema(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style function schema with required string parameters."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": parameters,
                "required": list(parameters),
            },
        },
    }


def dumps_call(name: str, arguments: dict[str, Any]) -> str:
    """A well-formed tool call as the model should write it."""
    payload = json.dumps({"name": name, "arguments": arguments})
    return f"<tool_call>\n{payload}\n</tool_call>"
