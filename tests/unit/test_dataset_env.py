"""Dataset-v0: rows from JSONL, Parquet and the Hugging Face cache as episodes; the
seed -> row contract, the train/eval split, malformed rows, one-line errors, and
the shipped arithmetic set being exactly what its generator writes."""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import sys
from collections import Counter
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

from envs import EnvConfigError, make_env
from envs.calculator import SYSTEM_PROMPT as CALCULATOR_PROMPT
from envs.data import make_math_dataset
from envs.dataset import SHIPPED, DatasetEnv
from envs.dataset_rows import hash_fraction, parse_hf
from envs.tools.calculator import Calculator

ID = "asyncrl/Dataset-v0"
ARITHMETIC = re.compile(
    r"(?:What is|Compute|Calculate|Evaluate) (?P<a>\d+) (?P<op>[-+*]) (?P<b>\d+)[?.]"
)
"""Calculator-v0's question forms (envs/calculator.py QUESTION_FORMS) over `a op b`."""


def write_jsonl(path: Path, rows: list, raw_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(row) for row in rows] + list(raw_lines)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def sums(count: int) -> list[dict]:
    return [
        {"question": f"What is {i} + 1?", "answer": i + 1, "level": i % 3} for i in range(count)
    ]


def one_line_error(**kwargs) -> str:
    with pytest.raises(EnvConfigError) as raised:
        make_env(ID, kwargs)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("env.kwargs."), message
    return message


# --- rows, tasks and the seed -> row contract ----------------------------------------


def test_rows_become_tasks_in_file_order(tmp_path):
    path = write_jsonl(tmp_path / "sums.jsonl", sums(5))
    env = make_env(ID, {"path": str(path), "eval_fraction": 0.0})
    assert env.num_tasks == 5
    observation, info = env.reset(seed=3)
    assert info["task"] == {
        "question": "What is 3 + 1?",
        "answer": "4",
        "level": 0,
        "row": 3,
        "source": f"{path}:4",
    }
    assert observation[-1] == {"role": "user", "content": "What is 3 + 1?"}
    assert "<answer>number</answer>" in observation[0]["content"]


def test_seed_maps_to_row_modulo_num_tasks(tmp_path):
    env = make_env(
        ID, {"path": str(write_jsonl(tmp_path / "s.jsonl", sums(7))), "eval_fraction": 0}
    )
    for row in range(7):
        for k in (0, 1, 5):
            seed = k * env.num_tasks + row
            _, info = env.reset(seed=seed)
            assert env.task_key(seed) == row == info["task"]["row"]
            assert info["task"]["question"] == f"What is {row} + 1?"
    _, info = env.reset()  # no seed: one drawn from np_random, still a row of the split
    assert 0 <= info["task"]["row"] < env.num_tasks


def test_split_is_complete_disjoint_and_stable(tmp_path):
    rows = sums(400) + [{"question": "What is 0 + 1?", "answer": 1}]  # a repeated prompt
    path = write_jsonl(tmp_path / "a.jsonl", rows)
    train = make_env(ID, {"path": str(path), "split": "train"})
    held = make_env(ID, {"path": str(path), "split": "eval"})
    train_q = [train.task_at(i)["question"] for i in range(train.num_tasks)]
    eval_q = [held.task_at(i)["question"] for i in range(held.num_tasks)]
    assert train.num_tasks + held.num_tasks == len(rows)
    assert not set(train_q) & set(eval_q) and held.num_tasks > 0
    assert 0.05 < held.num_tasks / len(rows) < 0.15  # eval_fraction 0.1
    assert (train_q + eval_q).count("What is 0 + 1?") == 2  # both copies on one side
    lines = [int(train.task_at(i)["source"].rpartition(":")[2]) for i in range(train.num_tasks)]
    assert lines == sorted(lines)  # file order

    shuffled = rows + sums(420)[400:]  # grown by 20 rows, then reordered
    random.Random(1).shuffle(shuffled)
    again = make_env(
        ID, {"path": str(write_jsonl(tmp_path / "b.jsonl", shuffled)), "split": "eval"}
    )
    eval_again = {again.task_at(i)["question"] for i in range(again.num_tasks)}
    assert eval_again & {row["question"] for row in rows} == set(eval_q)

    other_seed = make_env(ID, {"path": str(path), "split": "eval", "split_seed": 1})
    assert {other_seed.task_at(i)["question"] for i in range(other_seed.num_tasks)} != set(eval_q)


def test_hash_fraction_is_fixed_across_processes_and_versions():
    """The split must not move between runs: pin one value of the hash."""
    assert hash_fraction(0, "What is 3 + 4?") == pytest.approx(0.6175875, abs=1e-6)


def test_nested_keys_and_a_missing_system_prompt(tmp_path):
    rows = [{"problem": {"text": "What is 2 * 3?"}, "solution": {"value": 6}}]
    path = write_jsonl(tmp_path / "nested.jsonl", rows)
    env = make_env(
        ID,
        {
            "path": str(path),
            "prompt_key": "problem.text",
            "answer_key": "solution.value",
            "eval_fraction": 0,
            "system_prompt": "",
        },
    )
    observation, info = env.reset(seed=0)
    assert observation == ({"role": "user", "content": "What is 2 * 3?"},)
    assert info["task"]["answer"] == "6"


def test_relative_paths_resolve_from_cwd_then_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = make_env(ID, {"path": "envs/data/arithmetic.jsonl"})
    assert shipped.num_tasks == make_env(ID).num_tasks
    write_jsonl(tmp_path / "mine.jsonl", sums(3))
    assert make_env(ID, {"path": "mine.jsonl", "eval_fraction": 0}).num_tasks == 3


def test_several_files_are_read_in_order(tmp_path):
    first = write_jsonl(tmp_path / "1.jsonl", sums(2))
    second = write_jsonl(tmp_path / "2.jsonl", [{"question": "Last?", "answer": 0}])
    env = make_env(ID, {"path": [str(first), str(second)], "eval_fraction": 0})
    assert env.num_tasks == 3 and env.task_at(2)["source"] == f"{second}:1"


def test_rows_are_cached_until_the_file_changes(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", sums(4))
    one = make_env(ID, {"path": str(path), "eval_fraction": 0})
    two = make_env(ID, {"path": str(path), "eval_fraction": 0})
    assert one.rows[0] is two.rows[0]  # the same loaded rows, not a second read
    write_jsonl(path, sums(6))
    assert make_env(ID, {"path": str(path), "eval_fraction": 0}).num_tasks == 6


# --- Parquet and Hugging Face ---------------------------------------------------------


def test_parquet_rows(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed: Parquet unreadable")
    import pyarrow.parquet as pq

    path = tmp_path / "sums.parquet"
    pq.write_table(pa.Table.from_pylist(sums(4) + [{"question": None, "answer": 1}]), path)
    env = make_env(ID, {"path": str(path), "eval_fraction": 0})
    assert env.num_tasks == 4
    _, info = env.reset(seed=6)
    assert info["task"]["question"] == "What is 2 + 1?" and info["task"]["answer"] == "3"
    assert info["task"]["source"] == f"{path}:3"


def test_parquet_without_pyarrow_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert "pip install pyarrow" in one_line_error(path=str(path))


def test_hf_without_the_datasets_library_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert "pip install datasets" in one_line_error(path="hf:someone/math")


def test_hf_dataset_not_in_the_cache_is_one_line_and_never_downloads(monkeypatch):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed")
    from huggingface_hub import constants

    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("the test forbids network access")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # as if online
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    message = one_line_error(path="hf:asyncrl-tests/never-published-xyz:main@test")
    assert "not loadable from the local Hugging Face cache" in message
    assert attempts == []


def test_hf_dataset_loads_from_the_cache_offline(monkeypatch):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed")
    from huggingface_hub import constants

    calls = []

    def cached(name, config, split):
        calls.append(
            (name, config, split, datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE)
        )
        return datasets.Dataset.from_list([{"problem": "What is 5 - 2?", "solution": "3"}])

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_dataset", cached)
    spec = "hf:someone/math:easy@test"
    kwargs = {"path": spec, "prompt_key": "problem", "answer_key": "solution", "eval_fraction": 0}
    _, info = make_env(ID, kwargs).reset(seed=0)
    assert calls == [("someone/math", "easy", "test", True, True)]
    assert datasets.config.HF_HUB_OFFLINE is False  # offline for that one call only
    assert info["task"]["answer"] == "3" and info["task"]["source"] == f"{spec}:1"


def test_parse_hf():
    assert parse_hf("hf:openai/gsm8k") == ("openai/gsm8k", None, "train")
    assert parse_hf("hf:openai/gsm8k:main@test") == ("openai/gsm8k", "main", "test")


# --- malformed rows and errors -------------------------------------------------------


def test_malformed_rows_are_skipped_and_reported_by_line(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"question": "What is 1 + 1?", "answer": 2}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"question": "What is 2 + 2?"}),
        "",
        json.dumps({"question": "  ", "answer": 1}),
        json.dumps({"question": "What is 3 + 3?", "answer": [6]}),
        json.dumps({"question": "What is 4 + 4?", "answer": True}),
        json.dumps({"question": 7, "answer": 7}),
        json.dumps({"question": "What is 5 + 5?", "answer": "10"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="envs"):
        env = make_env(ID, {"path": str(path), "eval_fraction": 0})
    assert env.num_tasks == 2
    assert [env.task_at(i)["source"] for i in range(2)] == [f"{path}:1", f"{path}:10"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 7 malformed row(s) of 9" in warning
    for number, why in [
        (2, "not JSON"),
        (3, "not an object but a list"),
        (4, "missing 'answer'"),
        (6, "empty 'question'"),
        (7, "'answer' is a list"),
    ]:
        assert f"{path}:{number}: {why}" in warning
    assert f"{path}:8" not in warning  # five are quoted, all are counted


@pytest.mark.parametrize(
    "content, needle",
    [
        ("", "no usable rows (it holds no records)"),
        ("\n\n", "no usable rows (it holds no records)"),
        ('{"q": "What?", "a": 1}\n[]\n', "no usable rows (2 malformed, first at line 1: missing"),
    ],
)
def test_a_file_without_usable_rows_is_one_line(tmp_path, content, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    message = one_line_error(path=str(path))
    assert needle in message and message.startswith(f"env.kwargs.path={path}:")
    if "malformed" in needle:
        assert "set env.kwargs.prompt_key/answer_key" in message


def test_missing_unreadable_and_unknown_files_are_one_line(tmp_path):
    assert "no such file" in one_line_error(path=str(tmp_path / "nope.jsonl"))
    assert "no such file" in one_line_error(path="nowhere/nope.jsonl")
    (tmp_path / "rows.csv").write_text("question,answer\n")
    assert "unknown format '.csv'" in one_line_error(path=str(tmp_path / "rows.csv"))
    (tmp_path / "dir.jsonl").mkdir()
    assert "cannot read it" in one_line_error(path=str(tmp_path / "dir.jsonl"))


def test_an_empty_split_and_bad_options_are_one_line(tmp_path):
    path = str(write_jsonl(tmp_path / "s.jsonl", sums(5)))
    assert "the eval split is empty" in one_line_error(path=path, split="eval", eval_fraction=0)
    assert "the train split is empty" in one_line_error(path=path, eval_fraction=1)
    assert "use 'train' or 'eval'" in one_line_error(path=path, split="test")
    assert "unknown tool(s) ['search']" in one_line_error(path=path, tools=["search"])
    assert "unknown reward 'nope'" in one_line_error(path=path, reward_fn="nope")


# --- episodes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, correct", [("<answer>4</answer>", 1.0), ("<answer>5</answer>", 0.0)]
)
def test_an_episode_is_scored_by_the_reward(tmp_path, reply, correct):
    env = make_env(
        ID, {"path": str(write_jsonl(tmp_path / "s.jsonl", sums(5))), "eval_fraction": 0}
    )
    env.reset(seed=3)
    _, reward, terminated, truncated, info = env.step(reply)
    assert terminated and not truncated
    assert info["reward_components"] == {"correct": correct, "format": 1.0}
    assert reward == pytest.approx(correct + 0.1)


def test_math_verify_reward_by_name(tmp_path):
    path = write_jsonl(tmp_path / "frac.jsonl", [{"question": "Half of one?", "answer": "1/2"}])
    env = make_env(ID, {"path": str(path), "eval_fraction": 0, "reward_fn": "math_verify"})
    env.reset(seed=0)
    assert env.step("<answer>0.5</answer>")[4]["reward_components"]["correct"] == 1.0


def test_tools_option_gives_the_calculator(tmp_path):
    path = str(write_jsonl(tmp_path / "s.jsonl", sums(5)))
    env = make_env(ID, {"path": path, "eval_fraction": 0, "tools": ["calculator"]})
    assert env.tool_schemas == [Calculator.schema] and env.max_turns == 3
    observation, _ = env.reset(seed=2)
    assert observation[0]["content"] == CALCULATOR_PROMPT  # what the tiny policy knows
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "2 + 1"}}</tool_call>'
    assert env.step(call)[0] == ({"role": "tool", "content": "3"},)
    assert env.step("<answer>3</answer>")[4]["reward_components"]["correct"] == 1.0
    assert make_env(ID, {"path": path}).tool_schemas == []


def test_default_env_passes_the_gymnasium_checker():
    env = make_env(ID)
    check_env(env, skip_render_check=True)
    assert isinstance(env, DatasetEnv)
    assert env.num_tasks + make_env(ID, {"split": "eval"}).num_tasks == 3000


# --- the shipped dataset --------------------------------------------------------------


def test_shipped_file_is_what_the_generator_writes(tmp_path):
    out = make_math_dataset.main(["--out", str(tmp_path / "arithmetic.jsonl")])
    assert out.read_bytes() == SHIPPED.read_bytes(), (
        "envs/data/arithmetic.jsonl is stale: python -m envs.data.make_math_dataset"
    )


def test_shipped_file_has_the_promised_rows():
    rows = [json.loads(line) for line in SHIPPED.read_text().splitlines()]
    assert Counter(row["kind"] for row in rows) == make_math_dataset.COUNTS
    assert len(rows) == 3000 == len({row["question"] for row in rows})
    for row in rows:
        assert set(row) == {"question", "answer", "kind", "op"}
        if row["kind"] == "word":
            assert row["question"].endswith("?") and int(row["answer"]) >= 0
            continue
        found = ARITHMETIC.fullmatch(row["question"])
        assert found, row
        a, op, b = int(found["a"]), found["op"], int(found["b"])
        assert max(a, b) <= (9 if row["kind"] == "arithmetic_to_9" else 20)
        assert row["kind"] == "arithmetic_to_9" or max(a, b) > 9
        assert row["answer"] == str({"+": a + b, "-": a - b, "*": a * b}[op])
        assert op != "-" or a >= b  # no negative answers


def test_config_group_builds_the_shipped_env():
    from core.compose import compose

    cfg = compose(["env=dataset"])
    env = make_env(cfg.env.id, cfg.env.kwargs)
    assert env.task_at(0)["source"] == "envs/data/arithmetic.jsonl:1"
    assert env.max_turns == 1 and env.tool_schemas == []


def test_where_keeps_the_rows_with_the_asked_field_values():
    from envs.dataset import DatasetEnv

    everything = DatasetEnv(eval_fraction=0.0)
    small = DatasetEnv(where={"kind": "arithmetic_to_9"}, eval_fraction=0.0)
    some = DatasetEnv(where={"kind": ["arithmetic_to_9", "word"]}, eval_fraction=0.0)
    kinds = [everything.task_at(r)["kind"] for r in range(everything.num_tasks)]
    assert small.num_tasks == kinds.count("arithmetic_to_9") == 800
    assert some.num_tasks == 800 + kinds.count("word")
    assert {small.task_at(r)["kind"] for r in range(small.num_tasks)} == {"arithmetic_to_9"}
    plus = DatasetEnv(where={"kind": "arithmetic_to_9", "op": "+"}, eval_fraction=0.0)
    assert {plus.task_at(r)["question"].split()[-2] for r in range(plus.num_tasks)} == {"+"}
    with pytest.raises(EnvConfigError, match=r"no row matches \(the rows' fields: kind, op\)"):
        DatasetEnv(where={"kind": "calculus"})
