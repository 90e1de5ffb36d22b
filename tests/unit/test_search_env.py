"""Search-v0: the generated corpus, BM25 tools, multi-hop questions and scoring."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from gymnasium.utils.env_checker import check_env

from envs import make_env
from envs.base import ToolArgumentError, dumps_call
from envs.search import SearchEnv, scripted_episode, scripted_reply
from envs.search_corpus import build_corpus, tokenize
from envs.tools.search import Open, Search, load_index

CONF = Path(__file__).resolve().parents[2] / "conf" / "env" / "search.yaml"


def _names(text: str, name: str) -> bool:
    """Whether `text` names `name` as whole words."""
    return f" {' '.join(tokenize(name))} " in f" {' '.join(tokenize(text))} "


def test_passes_gymnasium_env_checker():
    check_env(make_env("asyncrl/Search-v0"), skip_render_check=True)


def test_same_seed_same_task():
    env = make_env("asyncrl/Search-v0")
    _, first = env.reset(seed=7)
    _, again = env.reset(seed=7)
    assert first["task"] == again["task"]
    questions = {env.reset(seed=s)[1]["task"]["question"] for s in range(20)}
    assert len(questions) > 10


def test_corpus_is_a_pure_function_of_its_seed():
    build = build_corpus.__wrapped__  # bypass the cache: really rebuild
    a, b, other = build(5, 120), build(5, 120), build(6, 120)
    assert a.documents == b.documents and a.questions == b.questions
    assert a.documents != other.documents
    assert len(a.documents) == 120 and len({d.title for d in a.documents}) == 120
    assert all(len(d.text.split(". ")) >= 4 for d in a.documents)


def test_bm25_ranks_each_article_first_for_its_title():
    index = load_index(0, 240)
    for doc in index.corpus.documents:
        assert index.search(doc.title, 1)[0][0].id == doc.id, doc.title


def test_index_is_shared_between_envs():
    assert SearchEnv().index is SearchEnv(hops=3).index


@pytest.mark.parametrize("hops", [2, 3])
def test_scripted_episode_reads_every_hop_and_scores_full_reward(hops):
    env = SearchEnv(hops=hops)
    env.reset(seed=11)
    terminated = truncated = False
    while not (terminated or truncated):
        _, reward, terminated, truncated, info = env.step(scripted_reply(env.task, env.messages))
    assert terminated and info["reward_components"] == {"correct": 1.0, "format": 1.0}
    assert reward == pytest.approx(1.1)
    messages = env.messages
    assert scripted_episode(env, seed=11) == messages
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user"] + ["assistant", "tool"] * (2 * hops) + ["assistant"]
    assert env.stats.turns == 2 * hops + 1 >= 3 and env.stats.tool_errors == 0
    opened = [m["content"] for m in messages[5::4]]
    assert [text.split(" (id:")[0] for text in opened] == env.task["gold_titles"]
    assert _names(opened[-1], env.task["answer"]) and not _names(opened[0], env.task["answer"])


def test_wrong_answer_scores_no_correctness():
    env = make_env("asyncrl/Search-v0")
    env.reset(seed=1)
    _, reward, terminated, truncated, info = env.step("<answer>Atlantis</answer>")
    assert terminated and not truncated
    assert info["reward_components"] == {"correct": 0.0, "format": 1.0}
    assert reward == pytest.approx(0.1)


@pytest.mark.parametrize(
    "name, arguments",
    [
        ("search", {"query": ""}),
        ("search", {"query": 42}),
        ("search", {"query": "?!"}),
        ("search", {}),
        ("search", {"query": "x", "k": 3}),
        ("open", {"doc": "doc9999"}),
        ("open", {"doc": ["doc0001"]}),
    ],
)
def test_bad_tool_arguments_come_back_to_the_model(name, arguments):
    env = make_env("asyncrl/Search-v0")
    env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(dumps_call(name, arguments))
    assert not terminated and not truncated and reward == 0.0
    assert observation[0]["role"] == "tool" and observation[0]["content"].startswith("Error:")
    assert info["tool_error_kinds"] == {"bad_arguments": 1} and info["failure"] is None


def test_open_by_title_and_its_length_bound():
    index = load_index(0, 240)
    doc = index.corpus.documents[3]
    full = asyncio.run(Open(index)(doc=doc.title.upper()))
    assert full.startswith(f"{doc.title} (id: {doc.id})") and doc.text in full
    short = asyncio.run(Open(index, max_chars=40)(doc=doc.id))
    assert short.endswith("...[truncated]") and len(short) < 60
    assert asyncio.run(Search(index)(query="zzzz qqqq")).startswith("No results")
    with pytest.raises(ToolArgumentError):
        asyncio.run(Open(index)(doc="   "))


def test_questions_cannot_be_answered_from_one_article():
    corpus = build_corpus(0, 240)
    assert corpus.questions_with(2) and corpus.questions_with(3)
    words = {d.title: f" {' '.join(tokenize(d.text))} " for d in corpus.documents}
    for q in corpus.questions:
        subject, answer = (f" {' '.join(tokenize(name))} " for name in (q.gold_titles[0], q.answer))
        assert answer not in words[q.gold_titles[0]], q  # the first article does not name it
        assert not any(subject in text and answer in text for text in words.values()), q


def test_config_file_builds_the_env():
    conf = yaml.safe_load(CONF.read_text())
    env = make_env(conf["id"], conf["kwargs"])
    assert isinstance(env, SearchEnv) and env.max_turns == 6 and env.hops == 2
