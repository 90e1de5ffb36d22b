"""Search tools over a local corpus: BM25 `search` and `open`.

Owns the BM25 index (built once per corpus and shared by every env in the
process) and the two tools the model calls with it. Tokenization is lowercase
words, the same as the corpus module's. Bad arguments (empty query, unknown
document, a non-string) are the model's mistake: ToolArgumentError. It knows
nothing about how the corpus is generated or how answers are scored.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from rank_bm25 import BM25Okapi

from envs.base import ToolArgumentError, tool_schema
from envs.search_corpus import Corpus, Document, build_corpus, tokenize

MAX_QUERY_CHARS = 300
SNIPPET_CHARS = 120
DEFAULT_OPEN_CHARS = 1500


class SearchIndex:
    """BM25 over a corpus' articles (title and text)."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self._bm25 = BM25Okapi([tokenize(f"{d.title} {d.text}") for d in corpus.documents])

    def search(self, query: str, k: int) -> list[tuple[Document, float]]:
        """The top `k` documents with a positive score, best first."""
        scores = self._bm25.get_scores(tokenize(query))
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.corpus.documents[i], float(scores[i])) for i in order if scores[i] > 0]


@lru_cache(maxsize=8)
def load_index(corpus_seed: int, num_entities: int) -> SearchIndex:
    """The index of `build_corpus(corpus_seed, num_entities)`, built once per process."""
    return SearchIndex(build_corpus(corpus_seed, num_entities))


def snippet(doc: Document, limit: int = SNIPPET_CHARS) -> str:
    """The article's first sentence, cut to `limit` characters."""
    end = doc.text.find(". ")
    first = doc.text if end < 0 else doc.text[: end + 1]
    return first if len(first) <= limit else first[: limit - 3].rstrip() + "..."


def _require_text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ToolArgumentError(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise ToolArgumentError(f"{name} is longer than {limit} characters")
    return value.strip()


def _no_extra(extra: dict[str, Any]) -> None:
    if extra:
        raise ToolArgumentError(f"unexpected arguments: {', '.join(sorted(extra))}")


class Search:
    """The `search` tool: {"query": "Acme Works"} -> numbered titles, ids, snippets."""

    name = "search"
    schema = tool_schema(
        "search",
        "Search the encyclopedia; returns the best-matching articles with their ids.",
        {"query": {"type": "string", "description": "keywords, e.g. a name"}},
    )

    def __init__(self, index: SearchIndex, top_k: int = 5):
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        self.index = index
        self.top_k = top_k

    async def __call__(self, query: Any = None, **extra: Any) -> str:
        _no_extra(extra)
        query = _require_text("query", query, MAX_QUERY_CHARS)
        if not tokenize(query):
            raise ToolArgumentError("query has no words to search for")
        hits = self.index.search(query, self.top_k)
        if not hits:
            return f"No results for {query!r}."
        return "\n".join(
            f"{rank}. {doc.title} (id: {doc.id}): {snippet(doc)}"
            for rank, (doc, _) in enumerate(hits, start=1)
        )


class Open:
    """The `open` tool: {"doc": "doc0042"} (an id or exact title) -> the article."""

    name = "open"
    schema = tool_schema(
        "open",
        "Open an encyclopedia article and read its text.",
        {"doc": {"type": "string", "description": "an id from search results, or a title"}},
    )

    def __init__(self, index: SearchIndex, max_chars: int = DEFAULT_OPEN_CHARS):
        if max_chars < 1:
            raise ValueError("max_chars must be >= 1")
        self.index = index
        self.max_chars = max_chars

    async def __call__(self, doc: Any = None, **extra: Any) -> str:
        _no_extra(extra)
        key = _require_text("doc", doc, MAX_QUERY_CHARS)
        found = self.index.corpus.lookup(key)
        if found is None:
            raise ToolArgumentError(
                f"no article {key!r}; pass an id from search results (e.g. doc0042) or a title"
            )
        text = f"{found.title} (id: {found.id})\n{found.text}"
        if len(text) > self.max_chars:
            text = text[: self.max_chars] + " ...[truncated]"
        return text
