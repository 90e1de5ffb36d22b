"""Search-v0: multi-hop questions answered by searching a local encyclopedia.

The corpus is fictional and generated from `corpus_seed` (envs.search_corpus),
so the model cannot answer from memory: it must `search`, `open` an article,
search again for what that article names, and so on for `hops` articles, then
state `<answer>name</answer>`. Scored by normalised exact match
(rewards.text.exact_match) plus a small format term.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from envs.base import Message, Tool, ToolEnv, dumps_call
from envs.tools.search import DEFAULT_OPEN_CHARS, Open, Search, load_index
from rewards import RewardSpec
from rewards.text import exact_match

SYSTEM_PROMPT = (
    "You answer questions about an encyclopedia of fictional people, cities, countries "
    "and companies; you cannot know these facts, so look them up. Tools: `search` "
    '({"query": keywords}) lists matching articles with their ids; `open` '
    '({"doc": an id or a title}) shows an article. Each question needs several '
    "articles: find the first one, read it, then search for what it names. When you "
    "know the answer, reply with only the name inside <answer>...</answer>."
)
_RESULT = re.compile(r"^\d+\. (.+) \(id: (\S+)\):", re.MULTILINE)


class SearchEnv(ToolEnv):
    def __init__(
        self,
        corpus_seed: int = 0,
        num_entities: int = 240,
        hops: int = 2,
        top_k: int = 5,
        open_max_chars: int = DEFAULT_OPEN_CHARS,
        reward_fn: RewardSpec = exact_match,
        reward_weights: dict[str, float] | None = None,
        max_turns: int | None = None,
        tool_timeout_s: float = 5.0,
        tool_retries: int = 1,
    ):
        """`max_turns` defaults to a search and an open per hop, plus two spare turns."""
        if hops not in (2, 3):
            raise ValueError("hops must be 2 or 3")
        self.index = load_index(corpus_seed, num_entities)
        self.questions = self.index.corpus.questions_with(hops)
        if not self.questions:
            raise ValueError(f"corpus {corpus_seed} has no {hops}-hop questions")
        self.hops = hops
        self.top_k = top_k
        self.open_max_chars = open_max_chars
        weights = {"correct": 1.0, "format": 0.1} if reward_weights is None else reward_weights
        turns = 2 * hops + 2 if max_turns is None else max_turns
        super().__init__(reward_fn, weights, turns, tool_timeout_s, tool_retries)

    def make_tools(self) -> list[Tool]:
        return [Search(self.index, self.top_k), Open(self.index, self.open_max_chars)]

    def sample_task(self, rng: np.random.Generator) -> dict[str, Any]:
        question = self.questions[int(rng.integers(0, len(self.questions)))]
        return {
            "question": question.text,
            "answer": question.answer,
            "gold_titles": list(question.gold_titles),
            "hops": question.hops,
            "template": question.template,
        }

    def opening_messages(self, task: dict[str, Any]) -> list[Message]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": task["question"]},
        ]


def scripted_reply(task: dict[str, Any], messages: list[Message]) -> str:
    """What a competent assistant says next: for each article on the gold path,
    search its title, then open the id the search returned; then answer."""
    turn = sum(1 for m in messages if m["role"] == "assistant")
    titles = task["gold_titles"]
    if turn >= 2 * len(titles):
        return f"<answer>{task['answer']}</answer>"
    wanted = titles[turn // 2]
    if turn % 2 == 0:
        return dumps_call("search", {"query": wanted})
    hits = _RESULT.findall(messages[-1]["content"])
    doc_id = next((i for title, i in hits if title == wanted), hits[0][1] if hits else wanted)
    return dumps_call("open", {"doc": doc_id})


def scripted_episode(env: SearchEnv, seed: int) -> list[Message]:
    """A complete demonstration dialogue produced by running the real env."""
    env.reset(seed=seed)
    terminated = truncated = False
    while not (terminated or truncated):
        reply = scripted_reply(env.task, env.messages)
        _, _, terminated, truncated, _ = env.step(reply)
    return [dict(m) for m in env.messages]
