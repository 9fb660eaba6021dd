"""A TFDS dataset of prompt records, built from local prompt files.

  build_prompt_tfds(files, data_dir, name=...)  .txt/.csv/.jsonl -> prepared
                                                 `mrt_prompts/NAME` dataset
  records_from_tfds(name_or_builder, split)     dataset -> list[PromptRecord]

Files are parsed by `read_prompt_file`, so a bad line fails the build with
its file and line number. Nothing is ever downloaded: the builder only reads
the local files, and `records_from_tfds` only reads prepared datasets.

Features of one example:
  index: int32, the record's position in the source files (all files, in
    order); reading sorts by it, so records come back in file order.
  start: Text, the weighted mix ("techno:1.0, flute:0.5").
  end: Text, the mix a transition morphs into; "" when not a transition.
  transition_chunks: int32, 0 when not a transition.

Splits: "train" holds every record, or, with held_out_fraction > 0, those
not held out; "held_out" holds a record when a hash of its text falls below
the fraction, so a prompt keeps its split when the files grow, and copies of
a prompt never straddle the splits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath

from mrt_distill.distill.prompts import DEFAULT_TRANSITION_CHUNKS
from mrt_distill.distill.prompts import PromptRecord
from mrt_distill.distill.prompts import PromptSourceError
from mrt_distill.distill.prompts import read_prompt_file
from mrt_distill.interop import import_tensorflow

tf = import_tensorflow()
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

log = logging.getLogger(__name__)

TRAIN, HELD_OUT = "train", "held_out"
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")


@dataclasses.dataclass(eq=False)
class MrtPromptsConfig(tfds.core.BuilderConfig):
  """One prompt set: its files and how they are split.

  Attributes:
    files: prompt files (.txt / .csv / .jsonl), read in this order.
    held_out_fraction: fraction in [0, 1) of records (by text hash) in the
      "held_out" split; 0 makes only "train".
    default_transition_chunks: chunk count of a transition that gives none.
  """

  files: tuple[str, ...] = ()
  held_out_fraction: float = 0.0
  default_transition_chunks: int = DEFAULT_TRANSITION_CHUNKS


class MrtPrompts(tfds.core.GeneratorBasedBuilder):
  """Prompt records from local prompt files (one config per prompt set).

  There are no predefined configs: pass an `MrtPromptsConfig`, or use
  `build_prompt_tfds`. A prepared set is read back by name
  ("mrt_prompts/NAME") from its data dir without the files.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Prompt records from .txt/.csv/.jsonl files."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Prompt records from local prompt files.",
        features=tfds.features.FeaturesDict({
            "index": np.int32,
            "start": tfds.features.Text(),
            "end": tfds.features.Text(),
            "transition_chunks": np.int32,
        }),
        # Written (and so read) in file order: TFDS would otherwise shuffle
        # examples by key hash when writing.
        disable_shuffling=True,
        # {"fingerprint": ...} of the files and options that built it.
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Local files only: nothing to download.
    cfg = self.builder_config
    if cfg is None or not getattr(cfg, "files", ()):
      raise PromptSourceError(
          "mrt_prompts: no prompt files to build from; use "
          "build_prompt_tfds(files, data_dir, name=...)")
    records = read_prompt_files(cfg.files, cfg.default_transition_chunks)
    self.info.metadata["fingerprint"] = _fingerprint(cfg)
    return {split: self._generate_examples(indexed) for split, indexed
            in assign_splits(records, cfg.held_out_fraction).items()}

  def _generate_examples(self, indexed):
    for i, r in indexed:
      yield i, {"index": i, "start": r.start, "end": r.end or "",
                "transition_chunks": r.transition_chunks}

  # TFDS prints "Downloading and preparing dataset ..." to stdout; nothing is
  # downloaded here, so say what happens instead.
  def _log_download_bytes(self) -> None:
    log.info("building prompt set %s from %d file(s) into %s",
             self.info.full_name, len(self.builder_config.files),
             self.data_dir)

  def _log_download_done(self) -> None:
    log.info("prompt set %s ready in %s", self.info.full_name, self.data_dir)


class _DropCustomConfigWarning(logging.Filter):
  """Drops TFDS's warnings about a config not in BUILDER_CONFIGS (all of
  ours) and about the not-yet-built folder: expected, and noise."""

  def filter(self, record: logging.LogRecord) -> bool:
    msg = record.getMessage()
    return not (msg.startswith("Using custom data configuration")
                or "has no dataset_info.json" in msg)


@contextlib.contextmanager
def _quiet_builder_warnings():
  f, logger = _DropCustomConfigWarning(), logging.getLogger("absl")
  logger.addFilter(f)
  try:
    yield
  finally:
    logger.removeFilter(f)


def build_prompt_tfds(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    data_dir: str | os.PathLike, *, name: str = "default",
    held_out_fraction: float = 0.0,
    default_transition_chunks: int = DEFAULT_TRANSITION_CHUNKS,
) -> MrtPrompts:
  """Builds (or reuses) the TFDS dataset `mrt_prompts/<name>` in `data_dir`.

  A prepared dataset is reused when the files' contents and the options are
  unchanged, and rebuilt otherwise, so it never goes stale.

  Args:
    files: one prompt file or several, concatenated in order.
    data_dir: TFDS data dir; the dataset lands in
      data_dir/mrt_prompts/<name>/1.0.0.
    name: the config name, read back as "mrt_prompts/<name>".
    held_out_fraction: see `MrtPromptsConfig`.
    default_transition_chunks: see `read_prompt_file`.

  Returns:
    The prepared builder (`records_from_tfds(builder, "train")` reads it).

  Raises:
    PromptFileError: a file is missing or has a bad line (file and line
      named).
    ValueError: a bad option, or a held-out split that leaves a split empty.
  """
  if isinstance(files, (str, os.PathLike)):
    files = [files]
  files = tuple(os.path.abspath(os.fspath(f)) for f in files)
  if not files:
    raise ValueError("build_prompt_tfds: give at least one prompt file")
  if not isinstance(name, str) or not _CONFIG_NAME.match(name):
    raise ValueError(
        f"name={name!r}: use letters, digits, '_', '-', '.' (it is a TFDS "
        "config name and a directory name)")
  check_held_out_fraction(held_out_fraction)
  cfg = MrtPromptsConfig(name=name, files=files,
                         held_out_fraction=float(held_out_fraction),
                         default_transition_chunks=default_transition_chunks)
  data_dir = os.fspath(data_dir)
  with _quiet_builder_warnings():
    builder = MrtPrompts(config=cfg, data_dir=data_dir)
    if builder.is_prepared():
      if builder.info.metadata.get("fingerprint") == _fingerprint(cfg):
        return builder
      mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS  # Overwrite.
    else:
      mode = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        try_download_gcs=False, download_mode=mode))
    # A fresh builder reads the new dataset info back from disk.
    return MrtPrompts(config=cfg, data_dir=data_dir)


def records_from_tfds(name_or_builder: str | tfds.core.DatasetBuilder,
                      split: str = TRAIN,
                      data_dir: str | os.PathLike | None = None
                      ) -> list[PromptRecord]:
  """Prompt records of a prepared TFDS dataset, in index (file) order.

  Any prepared dataset whose examples have a text "start" (or "prompt")
  feature works; "end", "transition_chunks" and "index" are optional.

  Args:
    name_or_builder: a builder, or "NAME[/CONFIG][:VERSION]", e.g.
      "mrt_prompts/my_set".
    split: a split name or TFDS split expression ("train[:50%]").
    data_dir: where the dataset is prepared (TFDS's default when None);
      ignored for a builder.

  Returns:
    list[PromptRecord].

  Raises:
    PromptSourceError: unknown or unprepared dataset, unknown split, or an
      example that is not a valid prompt record.
  """
  if isinstance(name_or_builder, tfds.core.DatasetBuilder):
    builder = name_or_builder
  else:
    builder = _prepared_builder(str(name_or_builder), data_dir)
  where = f"TFDS {builder.info.full_name}, split {split!r}"
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False)
  except (ValueError, KeyError, AssertionError) as e:
    raise PromptSourceError(
        f"{where}: cannot read it ({e}); the dataset has splits "
        f"{sorted(builder.info.splits)}") from None
  return records_from_examples(tfds.as_numpy(ds), where)


def has_version(name: str) -> bool:
  """Whether a TFDS name ends in ":X.Y.Z"."""
  return re.search(r":\d+\.\d+\.\d+$", name) is not None


def versioned_name(name: str, data_dir=None) -> str:
  """"NAME[/CONFIG]" -> "NAME[/CONFIG]:VERSION" of the prepared dataset."""
  return f"{name}:{_prepared_builder(name, data_dir).version}"


def _prepared_builder(name: str, data_dir) -> tfds.core.DatasetBuilder:
  """tfds.builder(name) when prepared in data_dir, else PromptSourceError."""
  data_dir = os.fspath(data_dir) if data_dir is not None else None
  try:
    with _quiet_builder_warnings():
      builder = tfds.builder(name, data_dir=data_dir)
      if builder.is_prepared():
        return builder
    reason = None
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    reason = str(e).splitlines()[0]
  # Say what is there instead: usually a typo in CONFIG or DATA_DIR.
  root = epath.Path(data_dir or tfds.core.constants.DATA_DIR)
  base = name.split(":")[0].split("/")[0]
  there = sorted(f"{base}/{p.parent.parent.name}" for p in
                 (root / base).glob("*/*/dataset_info.json")) if (
                     root / base).is_dir() else []
  raise PromptSourceError(
      f"TFDS dataset {name!r} is not prepared in {root} "
      + (f"(prepared there: {', '.join(there)})" if there else
         f"({reason or 'no prepared config there'})")
      + "; build it first (build_prompt_tfds(files, data_dir, name=...) for "
      "prompt files); nothing is downloaded here")


# ---- shared with seqio_prompts ----------------------------------------------
def read_prompt_files(files: Iterable[str],
                      default_transition_chunks: int) -> list[PromptRecord]:
  """The records of several prompt files, concatenated in order."""
  records = []
  for f in files:
    records += read_prompt_file(
        f, default_transition_chunks=default_transition_chunks)
  return records


def assign_splits(records: Sequence[PromptRecord], held_out_fraction: float
                  ) -> dict[str, list[tuple[int, PromptRecord]]]:
  """{"train": [(index, record)], "held_out": [...] when fraction > 0}."""
  check_held_out_fraction(held_out_fraction)
  indexed = list(enumerate(records))
  if not held_out_fraction:
    return {TRAIN: indexed}
  splits = {TRAIN: [], HELD_OUT: []}
  for i, r in indexed:
    splits[HELD_OUT if _unit_hash(r) < held_out_fraction else TRAIN].append(
        (i, r))
  empty = [s for s, rs in splits.items() if not rs]
  if empty:
    raise ValueError(
        f"held_out_fraction={held_out_fraction} leaves split {empty[0]!r} "
        f"empty ({len(splits[TRAIN])} train, {len(splits[HELD_OUT])} "
        f"held out of {len(records)} prompts); add prompts or change the "
        "fraction")
  return splits


def _unit_hash(r: PromptRecord) -> float:
  """Stable hash of the record's text in [0, 1) (Python's hash() is salted)."""
  key = f"{r.start}\0{r.end or ''}".encode()
  return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64


def check_held_out_fraction(f: Any) -> None:
  """Raises ValueError unless f is a number in [0, 1)."""
  if (not isinstance(f, (int, float)) or isinstance(f, bool)
      or not 0 <= f < 1):
    raise ValueError(f"held_out_fraction={f!r}: must be in [0, 1)")


def _fingerprint(cfg: MrtPromptsConfig) -> str | None:
  """Hash of the files' bytes and the options; None when a file is missing
  (the build then fails with read_prompt_file's message)."""
  h = hashlib.sha256(repr((cfg.held_out_fraction,
                           cfg.default_transition_chunks,
                           MrtPrompts.VERSION)).encode())
  try:
    for f in cfg.files:
      with open(f, "rb") as fh:
        h.update(hashlib.sha256(fh.read()).digest())
  except OSError:
    return None
  return h.hexdigest()


def _text(v: Any) -> str | None:
  if v is None:
    return None
  return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def records_from_examples(examples: Iterable[Mapping[str, Any]],
                          where: str) -> list[PromptRecord]:
  """Numpy examples {"start"|"prompt", "end"?, "transition_chunks"?,
  "index"?} -> records, sorted by "index" when present."""
  keyed = []
  for n, ex in enumerate(examples):
    start = _text(ex.get("start", ex.get("prompt")))
    if start is None:
      raise PromptSourceError(
          f"{where}: examples need a text 'start' (or 'prompt') feature; "
          f"they have {sorted(ex)}")
    end = _text(ex.get("end")) or None
    chunks = ex.get("transition_chunks")
    if chunks is None:
      chunks = DEFAULT_TRANSITION_CHUNKS if end is not None else 0
    index = int(ex["index"]) if "index" in ex else n
    try:
      record = PromptRecord(start, end, int(chunks))
    except ValueError as e:
      raise PromptSourceError(f"{where}, example {index}: {e}") from None
    keyed.append((index, n, record))
  keyed.sort(key=lambda k: k[:2])
  if not keyed:
    raise PromptSourceError(f"{where}: no examples")
  return [r for _, _, r in keyed]


__all__ = ["HELD_OUT", "MrtPrompts", "MrtPromptsConfig", "TRAIN",
           "assign_splits", "build_prompt_tfds", "check_held_out_fraction",
           "has_version", "read_prompt_files", "records_from_examples",
           "records_from_tfds", "versioned_name"]
