"""A seqio Task that yields prompt records.

  register_prompt_task(name, files=... | builder=... | tfds_name=...)
  records_from_seqio(task_name, split) -> list[PromptRecord]

The task's examples are the TFDS builder's (tfds_prompts.py): "start" and
"end" strings ("" when not a transition), "transition_chunks" and "index"
int32 scalars. Prompts are text that the style model embeds, so nothing is
tokenized: the output features use seqio's PassThroughVocabulary and only
declare dtype and rank, which seqio checks.

Sources: the prompt files themselves (a FunctionDataSource parsing them with
`read_prompt_file` on each read, so edits show up and bad lines are named),
or a prepared TFDS dataset (a read-only TfdsDataSource: never downloads).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mrt_distill.distill.prompts import DEFAULT_TRANSITION_CHUNKS
from mrt_distill.distill.prompts import PromptRecord
from mrt_distill.distill.prompts import PromptSourceError
from mrt_distill.interop import import_tensorflow
from mrt_distill.interop import tfds_prompts

tf = import_tensorflow()
import seqio  # pylint: disable=g-import-not-at-top,g-bad-import-order

_TEXT = seqio.Feature(seqio.PassThroughVocabulary(size=0), add_eos=False,
                      dtype=tf.string, rank=0)
OUTPUT_FEATURES = {
    "start": _TEXT,
    "end": _TEXT,
    "transition_chunks": seqio.Feature(
        seqio.PassThroughVocabulary(size=0), add_eos=False, dtype=tf.int32,
        rank=0),
}

# Tasks registered here, named when a lookup fails.
_REGISTERED: set[str] = set()


def register_prompt_task(
    name: str, *,
    files: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    builder=None, tfds_name: str | None = None,
    data_dir: str | os.PathLike | None = None,
    held_out_fraction: float = 0.0,
    default_transition_chunks: int = DEFAULT_TRANSITION_CHUNKS,
    replace: bool = False,
) -> seqio.Task:
  """Registers a seqio Task of prompt records; give exactly one source.

  Args:
    name: the task name (seqio allows letters, digits, "_", ".", ":", "#").
    files: prompt files (.txt / .csv / .jsonl), read in order.
    builder: a prepared TFDS builder, e.g. from `build_prompt_tfds`.
    tfds_name: a prepared TFDS dataset "NAME/CONFIG[:VERSION]" in
      `data_dir` (TFDS's default when None).
    data_dir: for `tfds_name` only.
    held_out_fraction: for `files`: as `MrtPromptsConfig`, the same records
      land in "held_out" as in a TFDS build of the same files.
    default_transition_chunks: for `files`: as `read_prompt_file`.
    replace: re-register a task of the same name instead of failing.

  Returns:
    The registered task; its splits are "train" (and "held_out"), or the
    TFDS dataset's.

  Raises:
    ValueError: not exactly one source, a bad option, or the name is taken
      and `replace` is False.
  """
  given = [k for k, v in (("files", files), ("builder", builder),
                          ("tfds_name", tfds_name)) if v is not None]
  if len(given) != 1:
    raise ValueError(
        f"register_prompt_task({name!r}): give exactly one of files, "
        f"builder, tfds_name (got {given or 'none'})")
  if files is not None:
    source = _files_source(files, held_out_fraction,
                           default_transition_chunks)
  else:
    if builder is not None:
      config = f"/{builder.builder_config.name}" if builder.builder_config \
          else ""
      tfds_name = f"{builder.name}{config}:{builder.version}"
      data_dir = builder.data_dir_root
    elif not tfds_prompts.has_version(tfds_name):
      # seqio wants "NAME/CONFIG:VERSION": take the prepared one's (and so
      # fail here, not at the first read, when it is not prepared).
      tfds_name = tfds_prompts.versioned_name(tfds_name, data_dir)
    # read_only: reading never builds, downloads or asks GCS.
    source = seqio.TfdsDataSource(
        tfds_name=tfds_name, read_only=True,
        tfds_data_dir=os.fspath(data_dir) if data_dir is not None else None)
  if replace:
    seqio.TaskRegistry.remove(name)
  elif name in seqio.TaskRegistry.names():
    raise ValueError(
        f"seqio task {name!r} is already registered; pass replace=True to "
        "register it again")
  task = seqio.Task(name, source=source, output_features=OUTPUT_FEATURES)
  seqio.TaskRegistry.add_provider(name, task)
  _REGISTERED.add(name)
  return task


def _files_source(files, held_out_fraction: float,
                  default_transition_chunks: int) -> seqio.DataSource:
  if isinstance(files, (str, os.PathLike)):
    files = [files]
  files = tuple(os.path.abspath(os.fspath(f)) for f in files)
  if not files:
    raise ValueError("register_prompt_task: files is empty")
  tfds_prompts.check_held_out_fraction(held_out_fraction)
  splits = ((tfds_prompts.TRAIN, tfds_prompts.HELD_OUT) if held_out_fraction
            else (tfds_prompts.TRAIN,))

  def dataset_fn(split: str, shuffle_files: bool) -> tf.data.Dataset:
    del shuffle_files  # File order; the grain pipeline shuffles.
    records = tfds_prompts.read_prompt_files(files, default_transition_chunks)
    indexed = tfds_prompts.assign_splits(records, held_out_fraction)[split]
    return tf.data.Dataset.from_tensor_slices({
        "index": tf.constant([i for i, _ in indexed], tf.int32),
        "start": tf.constant([r.start for _, r in indexed], tf.string),
        "end": tf.constant([r.end or "" for _, r in indexed], tf.string),
        "transition_chunks": tf.constant(
            [r.transition_chunks for _, r in indexed], tf.int32),
    })

  return seqio.FunctionDataSource(dataset_fn, splits=splits)


def records_from_seqio(task_name: str,
                       split: str = tfds_prompts.TRAIN) -> list[PromptRecord]:
  """Prompt records of a registered seqio Task's split, in index order.

  Raises:
    PromptSourceError: the task is not registered (or is a Mixture), the
      split is unknown, or an example is not a valid prompt record (a bad
      prompt file line is a PromptFileError naming file and line).
  """
  try:
    task = seqio.TaskRegistry.get(task_name)
  except ValueError:
    mine = sorted(_REGISTERED)
    is_mixture = task_name in seqio.MixtureRegistry.names()
    raise PromptSourceError(
        f"seqio task {task_name!r} is "
        + ("a Mixture; prompt sets are read from one Task" if is_mixture else
           "not registered in this process; register it with "
           "mrt_distill.interop.register_prompt_task(...) in a module and "
           f"name that module: seqio:{task_name}:{split}@my_tasks.py "
           f"(prompt tasks registered here: {mine or 'none'})")) from None
  splits = list(task.splits)
  if split not in splits:
    raise PromptSourceError(
        f"seqio task {task_name!r} has no split {split!r}; its splits are "
        f"{sorted(splits)}")
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False,
                        num_epochs=1)
  return tfds_prompts.records_from_examples(
      ds.as_numpy_iterator(), f"seqio task {task_name!r}, split {split!r}")


__all__ = ["OUTPUT_FEATURES", "records_from_seqio", "register_prompt_task"]
