"""Tests for prompt sets from TFDS / seqio (mrt_distill/interop, [interop]).

One TFDS prompt set is built per module and shared: TensorFlow takes seconds
to import and each build writes files. Without tensorflow-datasets / seqio
these tests skip, except under CI (which must install the extra), where they
fail, as tests/conftest.py does for the browser.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

# Before anything imports TensorFlow: its C++ logging reads this once.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from mrt_distill.distill import prompts as P  # noqa: E402
from mrt_distill.distill.prompt_source import load_prompt_source  # noqa: E402,E501

JSONL = "\n".join([
    '"techno:1.0, flute:0.5"',
    '{"prompt": "techno", "end": "ambient", "transition_chunks": 6}',
    "",
    '{"start": "jazz", "end": "piano"}',
    '{"prompt": "rock"}',
])
TXT = "\n".join([
    "# more prompts",
    "café jazz:0.7, bossa nova:0.3",
    "funk -> disco over 3",
    "dub",
    "lush strings -> choir",
])
SET = "unit"  # the shared config: tfds:mrt_prompts/unit:train@DATA_DIR


@pytest.fixture(scope="module")
def interop(require_interop):
  """-> (tfds_prompts, seqio_prompts), or skip (fail under CI)."""
  require_interop("tensorflow", "tensorflow_datasets", "seqio")
  from mrt_distill.interop import seqio_prompts, tfds_prompts
  return tfds_prompts, seqio_prompts


@pytest.fixture(scope="module")
def built(interop, tmp_path_factory):
  """-> (builder, data_dir, files, expected records), built once."""
  tfds_prompts, _ = interop
  root = tmp_path_factory.mktemp("interop")
  files = [root / "p.jsonl", root / "p.txt"]
  for f, text in zip(files, (JSONL, TXT)):
    f.write_text(text, encoding="utf-8")
  expected = [r for f in files for r in P.read_prompt_file(f)]
  data_dir = root / "tfds"
  builder = tfds_prompts.build_prompt_tfds(files, data_dir, name=SET)
  return builder, data_dir, files, expected


def take(ds, n):
  return list(itertools.islice(iter(ds), n))


# ---- TFDS --------------------------------------------------------------------
def test_tfds_records_equal_file_records(interop, built):
  tfds_prompts, _ = interop
  builder, data_dir, _, expected = built
  assert len(expected) == 8 and expected[-1] == P.PromptRecord(
      "lush strings", "choir", 8)
  assert tfds_prompts.records_from_tfds(builder, "train") == expected
  # By name, from the data dir alone (what the tfds: spec does).
  assert tfds_prompts.records_from_tfds(
      f"mrt_prompts/{SET}", "train", data_dir=data_dir) == expected
  assert load_prompt_source(
      f"tfds:mrt_prompts/{SET}:1.0.0:train[:3]@{data_dir}") == expected[:3]


def test_tfds_build_reuses_unchanged_and_rebuilds_changed(interop, tmp_path):
  tfds_prompts, _ = interop
  f = tmp_path / "p.txt"
  f.write_text("techno\nambient\n", encoding="utf-8")
  b = tfds_prompts.build_prompt_tfds(f, tmp_path / "tfds")
  mtime = os.path.getmtime(os.path.join(b.data_dir, "dataset_info.json"))
  b = tfds_prompts.build_prompt_tfds(f, tmp_path / "tfds")
  assert os.path.getmtime(
      os.path.join(b.data_dir, "dataset_info.json")) == mtime
  # An edited file must not leave a stale dataset behind.
  f.write_text("techno\nambient\ndub\n", encoding="utf-8")
  b = tfds_prompts.build_prompt_tfds(f, tmp_path / "tfds")
  assert tfds_prompts.records_from_tfds(b) == [
      P.PromptRecord(p) for p in ("techno", "ambient", "dub")]


def test_held_out_split_partitions_by_text_in_tfds_and_seqio(interop, built):
  tfds_prompts, seqio_prompts = interop
  _, data_dir, files, expected = built
  b = tfds_prompts.build_prompt_tfds(files, data_dir, name="split",
                                     held_out_fraction=0.5)
  train = tfds_prompts.records_from_tfds(b, "train")
  held = tfds_prompts.records_from_tfds(b, "held_out")
  assert train and held
  # A partition of the records, each part in file order.
  assert tfds_prompts.records_from_tfds(b, "train+held_out") == expected
  assert train == [r for r in expected if r not in held]
  seqio_prompts.register_prompt_task("mrt_test_split", files=files,
                                     held_out_fraction=0.5, replace=True)
  assert seqio_prompts.records_from_seqio("mrt_test_split",
                                          "held_out") == held


def test_bad_line_fails_the_tfds_build_with_its_line(interop, tmp_path):
  tfds_prompts, seqio_prompts = interop
  bad = tmp_path / "bad.txt"
  bad.write_text("techno\n# note\nflute:abc\n", encoding="utf-8")
  with pytest.raises(P.PromptFileError, match=r"bad.txt, line 3: 'flute:abc'"):
    tfds_prompts.build_prompt_tfds(bad, tmp_path / "tfds", name="bad")
  seqio_prompts.register_prompt_task("mrt_test_bad", files=bad, replace=True)
  with pytest.raises(P.PromptFileError, match="line 3"):
    seqio_prompts.records_from_seqio("mrt_test_bad", "train")


# ---- seqio -------------------------------------------------------------------
def test_seqio_tasks_yield_the_file_records(interop, built):
  _, seqio_prompts = interop
  builder, data_dir, files, expected = built
  sources = {"mrt_test_files": dict(files=files),
             "mrt_test_builder": dict(builder=builder),
             "mrt_test_name": dict(tfds_name=f"mrt_prompts/{SET}",
                                   data_dir=data_dir)}
  for name, source in sources.items():
    seqio_prompts.register_prompt_task(name, replace=True, **source)
    assert seqio_prompts.records_from_seqio(name, "train") == expected, name
  with pytest.raises(ValueError, match="already registered"):
    seqio_prompts.register_prompt_task("mrt_test_files", files=files)
  with pytest.raises(ValueError, match="exactly one of"):
    seqio_prompts.register_prompt_task("mrt_test_none")


def test_seqio_spec_imports_the_registering_module_once(interop, built,
                                                        tmp_path):
  _, _, files, expected = built
  tasks = tmp_path / "my_tasks.py"
  tasks.write_text(textwrap.dedent(f"""
      from mrt_distill.interop import register_prompt_task
      register_prompt_task("mrt_test_module", files={[str(f) for f in files]})
      """))
  spec = f"seqio:mrt_test_module:train@{tasks}"
  # The second load must not import (and so register) the module again.
  assert load_prompt_source(spec) == load_prompt_source(spec) == expected


# ---- the grain pipeline ------------------------------------------------------
def test_grain_batches_from_tfds_and_seqio_equal_the_files(interop, built):
  _, seqio_prompts = interop
  _, data_dir, files, expected = built
  seqio_prompts.register_prompt_task("mrt_test_grain", files=files,
                                     replace=True)

  def batches(records):
    return take(P.prompt_dataset(records, seed=3, batch_size=3), 6)

  want = batches(expected)
  assert batches(load_prompt_source(
      f"tfds:mrt_prompts/{SET}:train@{data_dir}")) == want
  assert batches(load_prompt_source("seqio:mrt_test_grain:train")) == want
  # TensorFlow is loaded by now; JAX must still run.
  import jax
  import jax.numpy as jnp
  assert int(jax.jit(lambda x: x + 1)(jnp.int32(1))) == 2


# ---- errors ------------------------------------------------------------------
@pytest.mark.parametrize("spec, match", [
    ("tfds:mrt_prompts", r"expected tfds:NAME\[/CONFIG\]"),
    ("seqio:just_a_task", r"expected seqio:TASK:SPLIT"),
    ("tfds:mrt_prompts/{SET}:nope@{DIR}", r"Unknown split 'nope'.*\['train'\]"),
    ("tfds:mrt_prompts/typo:train@{DIR}",
     r"'mrt_prompts/typo' is not prepared .*prepared there: mrt_prompts/"),
    ("tfds:no_such_dataset:train@{DIR}", "not prepared"),
    ("seqio:mrt_test_unknown:train", r"not registered in this process"),
    ("seqio:mrt_test_files:validation", r"no split 'validation'.*\['train'\]"),
    ("seqio:t:train@no_such_module_xyz", "not importable"),
    ("seqio:t:train@/no/such/tasks.py", "does not exist"),
])
def test_bad_sources_are_clear_errors(interop, built, spec, match):
  _, seqio_prompts = interop
  _, data_dir, files, _ = built
  seqio_prompts.register_prompt_task("mrt_test_files", files=files,
                                     replace=True)
  with pytest.raises(P.PromptSourceError, match=match):
    load_prompt_source(spec.format(SET=SET, DIR=data_dir))


def test_missing_interop_names_the_install_command(monkeypatch):
  # Runs without TensorFlow: a spec must say how to get it.
  from mrt_distill import interop
  monkeypatch.delattr(interop, "tfds_prompts", raising=False)
  monkeypatch.setitem(sys.modules, "mrt_distill.interop.tfds_prompts", None)
  hint = r'pip install -c constraints.txt -e "\.\[interop\]"'
  with pytest.raises(P.PromptSourceError, match=hint):
    load_prompt_source("tfds:mrt_prompts/x:train")


def test_prompt_files_never_import_tensorflow(tmp_path):
  f = tmp_path / "p.txt"
  f.write_text("techno\n", encoding="utf-8")
  code = ("import sys, mrt_distill.distill.loop as L; "
          f"assert L.prompt_source.load_prompt_source({str(f)!r}); "
          "bad = {'tensorflow', 'tensorflow_datasets', 'seqio'} & "
          "set(sys.modules); assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
