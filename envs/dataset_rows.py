"""Question/answer rows read from files, checked, cached, and split train/eval.

Owns reading a dataset source (JSONL, Parquet, or a Hugging Face dataset already
in the local cache, never downloaded), picking each record's prompt and answer by
key, reporting malformed records by file and line, the per-process cache, and
the deterministic train/eval split. It knows nothing about episodes, prompts to
the model or rewards (envs/dataset.py).

Errors a user must fix (a missing or unreadable file, a file without one usable
row, an empty split, a missing optional library) are EnvConfigErrors of one line
that say what is wrong and what to do. A malformed record is not an error: it is
skipped and summarised in one warning per file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from envs import EnvConfigError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The directory holding envs/: relative paths not found from the current directory
are looked up here (so `envs/data/arithmetic.jsonl` works from anywhere)."""
HF_PREFIX = "hf:"
FORMATS = (".jsonl", ".parquet")
SHOWN_MALFORMED = 5
"""Malformed records quoted in a file's warning (all are counted)."""
_MISSING = object()


class Unreadable(str):
    """A record that could not be decoded; the string says why."""


@dataclass(frozen=True)
class Row:
    """One usable record: its prompt and answer as text, where it came from
    (`file:line`; a Parquet or Hugging Face row number counts from 1) and its
    other top-level fields (a reward may need them)."""

    prompt: str
    answer: str
    source: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Keys:
    """Which fields hold the prompt and the answer (a dotted key reaches into
    nested objects when the record has no field of that literal name)."""

    prompt: str = "question"
    answer: str = "answer"


# --- the public entry points --------------------------------------------------------


def load_rows(paths: Sequence[str], keys: Keys) -> tuple[Row, ...]:
    """Every usable row of `paths`, in order (file after file, line after line).

    Cached per process by (resolved paths, their mtimes and sizes, keys): env
    pools build many env instances from the same files."""
    return _load_cached(tuple(_fingerprint(p) for p in paths), keys)


def split_rows(
    rows: Sequence[Row], split: str, eval_fraction: float, split_seed: int
) -> tuple[Row, ...]:
    """The rows of `split` ("train" or "eval"), in their order: a row is in eval
    when the hash fraction of (split_seed, its prompt) is below `eval_fraction`,
    so identical prompts land together and adding, removing or reordering other
    rows never moves one."""
    want_eval = split == "eval"
    return tuple(
        row for row in rows if (hash_fraction(split_seed, row.prompt) < eval_fraction) == want_eval
    )


def hash_fraction(split_seed: int, prompt: str) -> float:
    """A stable number in [0, 1) for (split_seed, prompt), the same in every process."""
    digest = hashlib.blake2b(f"{split_seed}\0{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def resolve_path(path: str) -> Path:
    """`path` as given if absolute; else from the current directory, then from
    REPO_ROOT. An EnvConfigError naming both places when it is in neither."""
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else [Path.cwd() / given, REPO_ROOT / given]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    where = " or ".join(str(c) for c in candidates)
    raise EnvConfigError(f"env.kwargs.path={path}: no such file (looked for {where})")


# --- cache --------------------------------------------------------------------------


Fingerprint = tuple[str, str, int, int]
"""(path as given, resolved, mtime_ns, size)."""


def _fingerprint(path: str) -> Fingerprint:
    """A Hugging Face name has no file to stat: its cache is what it is."""
    if path.startswith(HF_PREFIX):
        return (path, path, 0, 0)
    resolved = resolve_path(path)
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise EnvConfigError(f"env.kwargs.path={path}: cannot read it ({exc})") from exc
    return (path, str(resolved), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=32)
def _load_cached(fingerprints: tuple[Fingerprint, ...], keys: Keys) -> tuple[Row, ...]:
    rows: list[Row] = []
    for given, resolved, _, _ in fingerprints:
        rows.extend(_load_one(given, resolved, keys))
    return tuple(rows)


def _load_one(given: str, resolved: str, keys: Keys) -> list[Row]:
    records, label = _records(given, resolved)
    rows, malformed = _check_records(records, label, keys)
    if not rows:  # the error says it all, in one line
        raise EnvConfigError(_no_rows_message(given, malformed, keys))
    if malformed:
        shown = "; ".join(f"{label}:{n}: {why}" for n, why in malformed[:SHOWN_MALFORMED])
        log.warning(
            "%s: skipped %d malformed row(s) of %d: %s%s",
            label,
            len(malformed),
            len(rows) + len(malformed),
            shown,
            "; ..." if len(malformed) > SHOWN_MALFORMED else "",
        )
    return rows


def _no_rows_message(given: str, malformed: list[tuple[int, str]], keys: Keys) -> str:
    if not malformed:
        return f"env.kwargs.path={given}: no usable rows (it holds no records); add some"
    number, why = malformed[0]
    unit = "line" if given.lower().endswith(".jsonl") else "row"
    return (
        f"env.kwargs.path={given}: no usable rows ({len(malformed)} malformed, first at "
        f"{unit} {number}: {why}); set env.kwargs.prompt_key/answer_key to the file's fields "
        f"(now {keys.prompt!r}/{keys.answer!r})"
    )


# --- records from each kind of source ------------------------------------------------


def _records(given: str, resolved: str) -> tuple[Iterator[tuple[int, Any]], str]:
    """(line or row number from 1, record) pairs, and a label for the source."""
    if given.startswith(HF_PREFIX):
        return _hf_records(given), given
    suffix = Path(resolved).suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_records(given, resolved), _label(given, resolved)
    if suffix == ".parquet":
        return _parquet_records(given, resolved), _label(given, resolved)
    raise EnvConfigError(
        f"env.kwargs.path={given}: unknown format {suffix or '(no suffix)'!r}; use a "
        f"{' or '.join(FORMATS)} file, or hf:<dataset>[:<config>][@<split>]"
    )


def _label(given: str, resolved: str) -> str:
    """How rows name their file: as the user gave it; a file of the repository
    given by absolute path (the shipped default) relative to the repository."""
    path = Path(resolved)
    if Path(given).is_absolute() and path.is_relative_to(REPO_ROOT):
        return str(path.relative_to(REPO_ROOT))
    return given


def _jsonl_records(given: str, resolved: str) -> Iterator[tuple[int, Any]]:
    try:
        data = Path(resolved).read_bytes()
    except OSError as exc:
        raise EnvConfigError(f"env.kwargs.path={given}: cannot read it ({exc})") from exc
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue  # blank lines (a trailing newline, spacing) are not records
        try:
            yield number, json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield number, Unreadable("not UTF-8")
        except json.JSONDecodeError as exc:
            yield number, Unreadable(f"not JSON ({exc.msg})")


def _parquet_records(given: str, resolved: str) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise EnvConfigError(
            f"env.kwargs.path={given}: reading Parquet needs pyarrow, which is not "
            "installed: pip install pyarrow (or convert the file to JSONL)"
        ) from exc
    try:
        table = pq.read_table(resolved)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise EnvConfigError(
            f"env.kwargs.path={given}: cannot read it as Parquet ({_first_line(exc)})"
        ) from exc
    return enumerate(table.to_pylist(), start=1)


def _hf_records(given: str) -> Iterator[tuple[int, Any]]:
    name, config, split = parse_hf(given)
    try:
        import datasets
    except ImportError as exc:
        raise EnvConfigError(
            f"env.kwargs.path={given}: Hugging Face datasets is not installed: "
            "pip install datasets (and download the dataset once)"
        ) from exc
    try:
        with _offline(datasets):
            loaded = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - any failure to load means the same to the user
        raise EnvConfigError(
            f"env.kwargs.path={given}: not loadable from the local Hugging Face cache "
            f"({type(exc).__name__}: {_first_line(exc)}); asyncrl never downloads: fetch it "
            f"once with datasets.load_dataset({name!r}, {config!r}, split={split!r}) online"
        ) from exc
    return enumerate(loaded, start=1)


def parse_hf(spec: str) -> tuple[str, str | None, str]:
    """`hf:<name>[:<config>][@<split>]` -> (name, config or None, split, "train" by default)."""
    body = spec.removeprefix(HF_PREFIX)
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    if not name:
        raise EnvConfigError(
            f"env.kwargs.path={spec}: name a dataset, as hf:<name>[:<config>][@<split>]"
        )
    return name, config or None, split or "train"


@contextmanager
def _offline(datasets: Any) -> Iterator[None]:
    """Hugging Face offline mode for one call. Both libraries read their flag once
    at import, so setting HF_HUB_OFFLINE now would come too late: set theirs."""
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- checking one record --------------------------------------------------------------


def _check_records(
    records: Iterable[tuple[int, Any]], label: str, keys: Keys
) -> tuple[list[Row], list[tuple[int, str]]]:
    """The usable rows, and (line, why) for each malformed record."""
    rows: list[Row] = []
    malformed: list[tuple[int, str]] = []
    for number, record in records:
        row_or_reason = to_row(record, f"{label}:{number}", keys)
        if isinstance(row_or_reason, Row):
            rows.append(row_or_reason)
        else:
            malformed.append((number, row_or_reason))
    return rows, malformed


def to_row(record: Any, source: str, keys: Keys) -> Row | str:
    """The record as a Row, or why it is malformed."""
    if isinstance(record, Unreadable):
        return str(record)
    if not isinstance(record, dict):
        return f"not an object but {_kind(record)}"
    prompt, answer = lookup(record, keys.prompt), lookup(record, keys.answer)
    for key, value in ((keys.prompt, prompt), (keys.answer, answer)):
        if value is _MISSING:
            return f"missing {key!r}"
        if value is None or value == "" or (isinstance(value, str) and not value.strip()):
            return f"empty {key!r}"
    if not isinstance(prompt, str):
        return f"{keys.prompt!r} is {_kind(prompt)}, not text"
    if isinstance(answer, bool) or not isinstance(answer, str | int | float):
        return f"{keys.answer!r} is {_kind(answer)}, not text or a number"
    extra = {k: v for k, v in record.items() if k not in (keys.prompt, keys.answer)}
    return Row(prompt, str(answer), source, extra)


def lookup(record: dict[str, Any], key: str) -> Any:
    """record[key]; for a dotted key the record lacks, the nested field (`a.b` is
    record["a"]["b"]); `_MISSING` when there is none."""
    if key in record:
        return record[key]
    value: Any = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def split_error(given: str, split: str, total: int, eval_fraction: float, seed: int) -> str:
    """The one line for a split without rows."""
    fix = "raise env.kwargs.eval_fraction" if split == "eval" else "lower env.kwargs.eval_fraction"
    return (
        f"env.kwargs.path={given}: the {split} split is empty ({total} rows, "
        f"eval_fraction={eval_fraction}, split_seed={seed}); {fix} or add rows"
    )


def as_paths(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """`path` as a list of strings (one path or a list of them)."""
    if isinstance(path, str | os.PathLike):
        return [os.fspath(path)]
    paths = [os.fspath(p) for p in path]
    if not paths:
        raise EnvConfigError("env.kwargs.path=[]: name at least one file")
    return paths
