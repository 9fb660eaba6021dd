"""Where a run's prompts come from: a prompt file, or a TFDS / seqio set.

`load_prompt_source` picks the reader from the spec. It sits above both
`prompts` (the record format and the file reader) and `mrt_distill.interop`
(the TFDS / seqio readers, which build `prompts.PromptRecord`s), so neither
of those imports the other's caller.
"""

from __future__ import annotations

import os

from mrt_distill.distill.prompts import DEFAULT_TRANSITION_CHUNKS
from mrt_distill.distill.prompts import PromptRecord
from mrt_distill.distill.prompts import read_prompt_file


def load_prompt_source(
    spec: str | os.PathLike, *,
    default_transition_chunks: int = DEFAULT_TRANSITION_CHUNKS,
) -> list[PromptRecord]:
  """Prompt records from a prompt file or a TFDS / seqio prompt set.

  Specs (full syntax in mrt_distill/interop/__init__.py):
    path/to/prompts.txt   a prompt file, as `read_prompt_file` (a file whose
                          name starts with "tfds:" or "seqio:": "./tfds:...")
    tfds:NAME[/CONFIG][:VERSION]:SPLIT[@DATA_DIR]
                          a prepared TFDS dataset, e.g.
                          tfds:mrt_prompts/my_set:train@/data/tfds
    seqio:TASK:SPLIT[@MODULE]
                          a seqio Task; MODULE (dotted or a .py file) is
                          imported first to register it, e.g.
                          seqio:my_prompts:train@my_tasks.py

  TensorFlow is imported only for the last two (the [interop] extra).

  Args:
    spec: the path or spec.
    default_transition_chunks: for prompt files; TFDS / seqio sets carry
      their chunk counts.

  Returns:
    The records, in source order.

  Raises:
    PromptFileError: as `prompts.read_prompt_file`; PromptSourceError for a bad
      spec, missing interop packages (the message gives the pip command),
      or an unknown dataset, task or split.
  """
  if isinstance(spec, str) and spec.startswith(("tfds:", "seqio:")):
    # Lazy: TensorFlow loads only when a spec asks for it.
    from mrt_distill import interop  # pylint: disable=g-import-not-at-top
    return interop.load_spec(spec)
  return read_prompt_file(
      spec, default_transition_chunks=default_transition_chunks)
