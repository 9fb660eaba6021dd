"""Prompt pipeline of the distillation: prompt files -> records -> grain.

A `PromptRecord` drives one teacher streaming session: a weighted prompt mix
("techno:1.0, flute:0.5"), optionally morphing into a second mix over a number
of chunks (a transition A -> B, so the student learns to follow steering).

Pipeline:
  read_prompt_file(path)      .txt / .csv / .jsonl -> list[PromptRecord]
  prompt_source.load_prompt_source(spec)
                              a path, or a "tfds:..." / "seqio:..." spec
                              (mrt_distill/interop, the [interop] extra)
  make_transitions(...)       random A -> B records from the plain prompts
  prompt_dataset(records,...) grain dataset: shard per JAX process, shuffle
                              per epoch, repeat forever, optional batching
  iterator_state_to_json / restore_iterator: checkpoint the iterator.

Reference: reference/magenta_rt_v1.md §4.3 (style interpolation: one linear
interpolation value per chunk).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from mrt_distill.style.mixing import parse_prompt_mix

SUPPORTED_EXTENSIONS = (".txt", ".csv", ".jsonl")
DEFAULT_TRANSITION_CHUNKS = 8

_ARROW = "->"
# "B over 6" at the end of a .txt transition. Any number is captured, so that
# "over 2.5" or "over -1" is reported instead of silently becoming prompt
# text; "over lush strings" stays prompt text.
_OVER = re.compile(r"^(?P<end>.*?)\s+over\s+(?P<n>[+-]?\d+(?:\.\d*)?)\s*$")


class PromptFileError(ValueError):
  """A prompt file cannot be read; the message names file, line and fix."""


class PromptSourceError(PromptFileError):
  """A tfds:/seqio: prompt source is malformed, unavailable or unreadable."""


@dataclasses.dataclass(frozen=True)
class PromptRecord:
  """One streaming session's prompt: a mix, optionally morphing into another.

  Attributes:
    start: weighted mix text, e.g. "techno:1.0, flute:0.5" or "techno".
    end: mix text the session morphs into (a transition), or None.
    transition_chunks: chunks over which `start` morphs into `end`; >= 1 for
      a transition, 0 when `end` is None.
  """

  start: str
  end: str | None = None
  transition_chunks: int = 0

  def __post_init__(self):
    _check_mix("start", self.start)
    if self.end is not None:
      _check_mix("end", self.end)
    n = self.transition_chunks
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
      raise ValueError(
          f"transition_chunks {n!r} must be an integer chunk count")
    if self.end is None and n != 0:
      raise ValueError(
          f"transition_chunks={n} but there is no end prompt: give an end "
          "prompt for a transition, or transition_chunks=0")
    if self.end is not None and n < 1:
      raise ValueError(
          f"transition {self.start!r} -> {self.end!r} over {n} chunks: the "
          "chunk count must be >= 1")
    # Plain int so records compare, hash and serialise the same whatever the
    # caller passed (numpy ints are not JSON-able).
    object.__setattr__(self, "transition_chunks", int(n))

  @property
  def is_transition(self) -> bool:
    return self.end is not None

  def weights_at(self, chunk_index: int) -> float:
    """Interpolation weight of `end` at a chunk: 0 at chunk <= 0, 1 at >= N.

    Linear in between (N = transition_chunks); always 0 without `end`.
    """
    if self.end is None:
      return 0.0
    return float(min(max(chunk_index / self.transition_chunks, 0.0), 1.0))

  def to_dict(self) -> dict[str, Any]:
    """JSON-able {"start": str, "end": str | None, "transition_chunks": int}."""
    return {"start": self.start, "end": self.end,
            "transition_chunks": self.transition_chunks}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> PromptRecord:
    """Inverse of `to_dict`; "end" and "transition_chunks" are optional."""
    if not isinstance(d, Mapping):
      raise ValueError(f"prompt record {d!r}: expected a dict")
    unknown = set(d) - {"start", "end", "transition_chunks"}
    if unknown:
      raise ValueError(
          f"prompt record {dict(d)!r}: unknown keys {sorted(unknown)}; "
          "expected 'start', 'end', 'transition_chunks'")
    if "start" not in d:
      raise ValueError(f"prompt record {dict(d)!r} has no 'start'")
    return cls(d["start"], d.get("end"), d.get("transition_chunks", 0))


def _check_mix(field: str, text: Any) -> None:
  if not isinstance(text, str):
    raise ValueError(f"{field} prompt {text!r} must be a string")
  parse_prompt_mix(text)  # Raises ValueError quoting the bad fragment.


# ---- prompt files ------------------------------------------------------------
def read_prompt_file(
    path: str | os.PathLike, *,
    default_transition_chunks: int = DEFAULT_TRANSITION_CHUNKS,
) -> list[PromptRecord]:
  """Read prompt records from a .txt, .csv or .jsonl file.

  Formats:
    .txt: one prompt mix per line; blank lines and lines starting with "#"
      are skipped; "A -> B" or "A -> B over N" is a transition over N chunks
      (default `default_transition_chunks`).
    .csv: header row required, with a "prompt" (or "start") column and
      optional "end" and "transition_chunks" columns; quote a mix that
      contains commas ("techno:1, flute:0.5"), or its parts become columns.
    .jsonl: one value per line, either a JSON string (a plain prompt) or an
      object with "prompt" (or "start"), optional "end", "transition_chunks".
      Blank lines are skipped.

  Args:
    path: the prompt file.
    default_transition_chunks: chunk count of a transition that gives none.

  Returns:
    The records, in file order.

  Raises:
    PromptFileError: unsupported extension, missing or unreadable file, no
      prompts, or any bad line; the message names the file, the 1-based line
      number and the offending text.
  """
  if (not isinstance(default_transition_chunks, int)
      or default_transition_chunks < 1):
    raise ValueError(
        f"default_transition_chunks={default_transition_chunks!r}: must be "
        "an integer >= 1")
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  readers = {".txt": _read_txt, ".csv": _read_csv, ".jsonl": _read_jsonl}
  if ext not in readers:
    raise PromptFileError(
        f"{path}: unsupported prompt file extension {ext or '(none)'!r}; "
        f"use one of {', '.join(SUPPORTED_EXTENSIONS)}")
  try:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with open(path, encoding="utf-8-sig", newline="") as f:
      records = readers[ext](f, path, default_transition_chunks)
  except FileNotFoundError:
    raise PromptFileError(f"prompt file {path} does not exist") from None
  except IsADirectoryError:
    raise PromptFileError(
        f"prompt file {path} is a directory; give a file") from None
  except UnicodeDecodeError as e:
    raise PromptFileError(
        f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the "
        "file as UTF-8") from None
  if not records:
    raise PromptFileError(
        f"{path}: no prompts found (the file is empty or holds only blank "
        "or comment lines); add at least one prompt")
  return records


def _line_error(path: str, line: int, text: str, problem: str,
                fix: str) -> PromptFileError:
  return PromptFileError(
      f"{path}, line {line}: {text!r}: {problem}. Expected format: {fix}")


def _make_record(path: str, line: int, text: str, fix: str,
                 start: Any, end: Any = None, chunks: Any = 0) -> PromptRecord:
  """PromptRecord(...) with any validation error turned into a line error."""
  try:
    return PromptRecord(start, end, chunks)
  except ValueError as e:
    raise _line_error(path, line, text, str(e), fix) from None


_TXT_FIX = ("one prompt mix per line, e.g. 'techno:1.0, flute:0.5', or a "
            "transition 'techno -> ambient over 8'")


def _read_txt(f, path: str, default_chunks: int) -> list[PromptRecord]:
  records = []
  for line_no, raw in enumerate(f, start=1):
    text = raw.strip()
    if not text or text.startswith("#"):
      continue
    records.append(_parse_txt_line(path, line_no, text, default_chunks))
  return records


def _parse_txt_line(path: str, line: int, text: str,
                    default_chunks: int) -> PromptRecord:
  parts = text.split(_ARROW)
  if len(parts) == 1:
    return _make_record(path, line, text, _TXT_FIX, text)
  if len(parts) > 2:
    raise _line_error(path, line, text,
                      f"more than one {_ARROW!r}", _TXT_FIX)
  start, end = parts[0].strip(), parts[1].strip()
  chunks = default_chunks
  over = _OVER.match(end)
  if over:
    end, n_text = over.group("end").strip(), over.group("n")
    if not re.fullmatch(r"\+?\d+", n_text) or int(n_text) < 1:
      raise _line_error(path, line, text,
                        f"chunk count {n_text!r} after 'over' is not a "
                        "positive integer", _TXT_FIX)
    chunks = int(n_text)
  return _make_record(path, line, text, _TXT_FIX, start, end, chunks)


_CSV_COLUMNS = ("prompt", "start", "end", "transition_chunks")
_CSV_FIX = ("a header row naming 'prompt' (or 'start'), optional 'end' and "
            "'transition_chunks'; rows like 'techno,ambient,8'")


def _read_csv(f, path: str, default_chunks: int) -> list[PromptRecord]:
  reader = csv.reader(f)
  try:
    header = _csv_header(reader, path)
    if header is None:
      return []
    records = []
    while True:
      # A quoted field may span lines: the row starts after the last one read.
      line = reader.line_num + 1
      try:
        row = next(reader)
      except StopIteration:
        return records
      if not any(cell.strip() for cell in row):
        continue  # Blank line or a row of empty cells.
      records.append(
          _parse_csv_row(path, line, header, row, default_chunks))
  except csv.Error as e:
    raise PromptFileError(
        f"{path}, line {reader.line_num}: malformed CSV ({e}); check the "
        "quoting") from None


def _csv_header(reader, path: str) -> list[str] | None:
  """First non-blank row -> lower-cased column names (None: no rows at all)."""
  for row in reader:
    if any(cell.strip() for cell in row):
      break
  else:
    return None
  line = reader.line_num
  header = [cell.strip().lower() for cell in row]
  text = ",".join(row)
  unknown = [c for c in header if c not in _CSV_COLUMNS]
  if unknown:
    raise _line_error(
        path, line, text,
        f"unknown column(s) {unknown} (the first line must be a header)",
        _CSV_FIX)
  if len(set(header)) != len(header):
    raise _line_error(path, line, text, "a column is repeated", _CSV_FIX)
  if ("prompt" in header) == ("start" in header):
    raise _line_error(path, line, text,
                      "the header needs exactly one of 'prompt' or 'start'",
                      _CSV_FIX)
  return header


def _parse_csv_row(path: str, line: int, header: list[str], row: list[str],
                   default_chunks: int) -> PromptRecord:
  text = ",".join(row)
  if len(row) > len(header):
    raise _line_error(
        path, line, text,
        f"{len(row)} fields but the header has {len(header)} columns "
        "(quote a mix that contains commas: \"techno:1, flute:0.5\")",
        _CSV_FIX)
  cells = {name: row[i].strip() if i < len(row) else ""
           for i, name in enumerate(header)}
  start = cells.get("prompt", cells.get("start", ""))
  prompt_col = "prompt" if "prompt" in header else "start"
  if not start:
    raise _line_error(path, line, text,
                      f"the {prompt_col!r} column is missing or empty",
                      _CSV_FIX)
  end = cells.get("end") or None
  chunks_text = cells.get("transition_chunks", "")
  if not chunks_text:
    chunks = default_chunks if end is not None else 0
  elif re.fullmatch(r"\+?\d+", chunks_text):
    chunks = int(chunks_text)
  else:
    raise _line_error(path, line, text,
                      f"transition_chunks {chunks_text!r} is not an integer",
                      _CSV_FIX)
  return _make_record(path, line, text, _CSV_FIX, start, end, chunks)


_JSONL_FIX = ('one JSON value per line, "techno:1.0" or '
              '{"prompt": "techno", "end": "ambient", "transition_chunks": 8}')


def _read_jsonl(f, path: str, default_chunks: int) -> list[PromptRecord]:
  records = []
  for line_no, raw in enumerate(f, start=1):
    text = raw.strip()
    if not text:
      continue
    try:
      value = json.loads(text)
    except json.JSONDecodeError as e:
      raise _line_error(path, line_no, text,
                        f"invalid JSON ({e.msg} at column {e.colno})",
                        _JSONL_FIX) from None
    records.append(
        _parse_jsonl_value(path, line_no, text, value, default_chunks))
  return records


def _parse_jsonl_value(path: str, line: int, text: str, value: Any,
                       default_chunks: int) -> PromptRecord:
  if isinstance(value, str):
    return _make_record(path, line, text, _JSONL_FIX, value)
  if not isinstance(value, dict):
    raise _line_error(path, line, text,
                      f"expected a JSON string or object, got "
                      f"{type(value).__name__}", _JSONL_FIX)
  unknown = sorted(set(value) - {"prompt", "start", "end",
                                 "transition_chunks"})
  if unknown:
    raise _line_error(path, line, text, f"unknown key(s) {unknown}",
                      _JSONL_FIX)
  if ("prompt" in value) == ("start" in value):
    raise _line_error(path, line, text,
                      "needs exactly one of 'prompt' or 'start'", _JSONL_FIX)
  start = value.get("prompt", value.get("start"))
  end = value.get("end")
  chunks = value.get("transition_chunks")
  if chunks is None:
    chunks = default_chunks if end is not None else 0
  return _make_record(path, line, text, _JSONL_FIX, start, end, chunks)


# ---- generated transitions ---------------------------------------------------
def make_transitions(records: Iterable[PromptRecord], pairs: int, chunks: int,
                     seed: int) -> list[PromptRecord]:
  """Random A -> B transitions between distinct plain prompts of `records`.

  The plain (non-transition) prompts are deduplicated in order; `pairs`
  distinct ordered pairs (A, B) with A != B are drawn without replacement,
  deterministically per `seed`.

  Args:
    records: source records; transitions among them are ignored.
    pairs: number of transitions to make (>= 0).
    chunks: transition length in chunks (>= 1).
    seed: random seed.

  Returns:
    `pairs` records with `end` set and `transition_chunks == chunks`.
  """
  if not isinstance(pairs, int) or pairs < 0:
    raise ValueError(f"pairs={pairs!r}: must be an integer >= 0")
  if not isinstance(chunks, int) or chunks < 1:
    raise ValueError(f"chunks={chunks!r}: must be an integer >= 1")
  plain = list(dict.fromkeys(r.start for r in records if r.end is None))
  n = len(plain)
  if pairs and n < 2:
    raise ValueError(
        f"need at least 2 distinct plain prompts to make transitions, got "
        f"{n}")
  total = n * (n - 1)
  if pairs > total:
    raise ValueError(
        f"asked for {pairs} transitions but {n} distinct prompts only make "
        f"{total} ordered pairs; ask for fewer or add prompts")
  rng = np.random.default_rng(seed)
  # Index k of the n·(n-1) ordered pairs: row a = k // (n-1); the column
  # skips a, so A != B by construction and no pair list is materialised.
  picks = rng.choice(total, size=pairs, replace=False) if pairs else []
  out = []
  for k in picks:
    a, r = divmod(int(k), n - 1)
    b = r + (r >= a)
    out.append(PromptRecord(plain[a], plain[b], chunks))
  return out


# ---- grain dataset -----------------------------------------------------------
def _record_to_dict(record: PromptRecord) -> dict[str, Any]:
  # Module level (not a lambda) so grain can pickle it for worker processes.
  return record.to_dict()


def _as_list(batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  # grain's default batching stacks leaves into numpy arrays, which breaks on
  # a mix of None and str in "end"; a list of dicts keeps records intact.
  return list(batch)


def prompt_dataset(records: Sequence[PromptRecord], *, seed: int,
                   shuffle: bool = True, process_index: int = 0,
                   process_count: int = 1, batch_size: int | None = None
                   ) -> grain.IterDataset:
  """Infinite, sharded, shuffled grain dataset of prompt records.

  Each JAX process keeps records[process_index::process_count] (shards are
  disjoint and together hold every record), then repeats its shard forever,
  reshuffled every epoch (each epoch yields every shard record exactly once).

  Args:
    records: the prompt records.
    seed: shuffle seed; the same seed gives the same order.
    shuffle: False keeps file order.
    process_index: this process (jax.process_index()).
    process_count: number of processes (jax.process_count()).
    batch_size: None yields one record dict at a time; an int yields lists of
      `batch_size` record dicts (batches run across epoch boundaries).

  Returns:
    A grain IterDataset of `PromptRecord.to_dict()` dicts {"start": str,
    "end": str | None, "transition_chunks": int}, or lists of them. Its
    iterators support get_state / set_state (see `restore_iterator`).
  """
  records = list(records)
  _check_dataset_args(records, seed, process_index, process_count,
                      batch_size)
  ds = grain.MapDataset.source(records).seed(seed)
  # Shard before repeat: slicing an infinite dataset would interleave epochs.
  ds = ds[process_index::process_count]
  if len(ds) == 0:
    raise ValueError(
        f"only {len(records)} prompt record(s) for {process_count} "
        f"processes: process {process_index} would get none; give at least "
        f"{process_count} prompts")
  if shuffle:
    ds = ds.shuffle()  # Reshuffles each epoch once repeated.
  ds = ds.repeat().map(_record_to_dict)
  # The records are in memory: reader threads would only contend for the GIL.
  it = ds.to_iter_dataset(
      grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  if batch_size is not None:
    it = it.batch(batch_size, batch_fn=_as_list)
  return it


def _check_dataset_args(records: list, seed: Any, process_index: Any,
                        process_count: Any, batch_size: Any) -> None:
  if not records:
    raise ValueError("no prompt records: the dataset needs at least one")
  bad = [r for r in records if not isinstance(r, PromptRecord)]
  if bad:
    raise ValueError(f"expected PromptRecord items, got {bad[0]!r}")
  if not _is_int(seed) or seed < 0:
    raise ValueError(f"seed={seed!r}: must be an integer >= 0")
  if not _is_int(process_count) or process_count < 1:
    raise ValueError(f"process_count={process_count!r}: must be >= 1")
  if not _is_int(process_index) or not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index={process_index!r}: must be in [0, {process_count})")
  if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
    raise ValueError(f"batch_size={batch_size!r}: must be None or >= 1")


def _is_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


# ---- checkpointing -----------------------------------------------------------
def iterator_state_to_json(it: grain.DatasetIterator) -> str:
  """The iterator's position as a JSON string (for a checkpoint)."""
  return json.dumps(it.get_state(), sort_keys=True)


def restore_iterator(ds: grain.IterDataset,
                     state_json: str) -> grain.DatasetIterator:
  """A new iterator over `ds` positioned where the saved one stopped.

  `ds` must be built with the same records and arguments as the dataset the
  state came from; it then continues with exactly the same elements.
  """
  try:
    state = json.loads(state_json)
  except (TypeError, json.JSONDecodeError) as e:
    raise ValueError(
        f"iterator state {state_json!r:.200} is not JSON ({e}); pass the "
        "string from iterator_state_to_json") from None
  it = iter(ds)
  it.set_state(state)
  return it


__all__ = [
    "DEFAULT_TRANSITION_CHUNKS", "PromptFileError", "PromptRecord",
    "PromptSourceError", "SUPPORTED_EXTENSIONS", "iterator_state_to_json",
    "make_transitions", "prompt_dataset",
    "read_prompt_file", "restore_iterator",
]
