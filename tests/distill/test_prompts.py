"""Tests for the distillation prompt pipeline (files, transitions, grain)."""

from __future__ import annotations

import itertools
import json

import pytest

from mrt_distill.distill.prompts import iterator_state_to_json
from mrt_distill.distill.prompts import make_transitions
from mrt_distill.distill.prompts import prompt_dataset
from mrt_distill.distill.prompts import PromptFileError
from mrt_distill.distill.prompts import PromptRecord
from mrt_distill.distill.prompts import read_prompt_file
from mrt_distill.distill.prompts import restore_iterator

R = PromptRecord


def write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return path


def take(it, n):
  return list(itertools.islice(it, n))


def records(n):
  return [R(f"prompt {i}") for i in range(n)]


# ---- PromptRecord ------------------------------------------------------------
def test_weights_at_ramps_linearly_and_clips():
  r = R("techno", "ambient", 4)
  assert [r.weights_at(i) for i in (-2, 0, 1, 2, 4, 9)] == [
      0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
  assert R("techno").weights_at(3) == 0.0


def test_record_dict_round_trip_is_json():
  for r in (R("techno:1.0, flute:0.5"), R("a", "b:0.5", 6)):
    d = json.loads(json.dumps(r.to_dict()))
    assert PromptRecord.from_dict(d) == r
  assert R("a").to_dict() == {"start": "a", "end": None,
                              "transition_chunks": 0}


@pytest.mark.parametrize("args, match", [
    (("techno:x",), "not a number"),
    (("a", None, 3), "no end prompt"),
    (("a", "b", 0), ">= 1"),
    (("a", "b:-1", 2), "negative"),
])
def test_record_validation(args, match):
  with pytest.raises(ValueError, match=match):
    R(*args)


# ---- file formats ------------------------------------------------------------
def test_txt_plain_comments_and_transitions(tmp_path):
  path = write(tmp_path, "p.txt", "\n".join([
      "# my prompts",
      "techno:1.0, flute:0.5",
      "",
      "  ambient  ",
      "techno -> ambient over 6",
      "jazz -> piano over strings",
      "rock -> metal:0.5",
  ]))
  assert read_prompt_file(path, default_transition_chunks=3) == [
      R("techno:1.0, flute:0.5"),
      R("ambient"),
      R("techno", "ambient", 6),
      R("jazz", "piano over strings", 3),
      R("rock", "metal:0.5", 3),
  ]
  # The default default is 8 chunks.
  assert read_prompt_file(path)[-1].transition_chunks == 8


def test_csv_columns(tmp_path):
  path = write(tmp_path, "p.csv", "\n".join([
      "prompt,end,transition_chunks",
      '"techno:1.0, flute:0.5",,',
      "techno,ambient,6",
      "",
      "jazz,piano,",
  ]))
  assert read_prompt_file(path, default_transition_chunks=5) == [
      R("techno:1.0, flute:0.5"), R("techno", "ambient", 6),
      R("jazz", "piano", 5)]
  path = write(tmp_path, "s.csv", "start\ntechno\nambient:0.5\n")
  assert read_prompt_file(path) == [R("techno"), R("ambient:0.5")]


def test_jsonl_objects_and_strings(tmp_path):
  path = write(tmp_path, "p.jsonl", "\n".join([
      '"techno:1.0, flute:0.5"',
      '{"prompt": "techno", "end": "ambient", "transition_chunks": 6}',
      "",
      '{"start": "jazz", "end": "piano"}',
      '{"prompt": "rock"}',
  ]))
  assert read_prompt_file(path, default_transition_chunks=4) == [
      R("techno:1.0, flute:0.5"), R("techno", "ambient", 6),
      R("jazz", "piano", 4), R("rock")]


# ---- file errors: file, line number, text, fix -------------------------------
def test_txt_bad_weight_names_line_3(tmp_path):
  path = write(tmp_path, "p.txt", "# header\ntechno\nflute:abc\nambient\n")
  with pytest.raises(PromptFileError) as e:
    read_prompt_file(path)
  msg = str(e.value)
  assert str(path) in msg and "line 3" in msg and "'flute:abc'" in msg
  assert "'prompt:0.5'" in msg  # The fix.


def test_txt_bad_chunk_count(tmp_path):
  path = write(tmp_path, "p.txt", "a\nb\na -> b over 2.5\n")
  with pytest.raises(PromptFileError, match=r"line 3: 'a -> b over 2.5'.*"
                     "positive integer"):
    read_prompt_file(path)
  path = write(tmp_path, "q.txt", "a -> b -> c\n")
  with pytest.raises(PromptFileError, match="line 1.*more than one"):
    read_prompt_file(path)


def test_csv_row_missing_prompt(tmp_path):
  path = write(tmp_path, "p.csv", "prompt,end\ntechno,\n,ambient\n")
  with pytest.raises(PromptFileError) as e:
    read_prompt_file(path)
  msg = str(e.value)
  assert str(path) in msg and "line 3" in msg and "',ambient'" in msg
  assert "'prompt' column is missing or empty" in msg


def test_csv_header_without_prompt_column(tmp_path):
  path = write(tmp_path, "p.csv", "techno\nambient\n")
  with pytest.raises(PromptFileError, match="line 1: 'techno'.*header"):
    read_prompt_file(path)


def test_csv_too_many_fields(tmp_path):
  path = write(tmp_path, "p.csv", "prompt\ntechno:1, flute:0.5\n")
  with pytest.raises(PromptFileError, match="line 2.*quote"):
    read_prompt_file(path)


def test_jsonl_invalid_json_line_2(tmp_path):
  path = write(tmp_path, "p.jsonl", '"techno"\n{"prompt": techno}\n')
  with pytest.raises(PromptFileError) as e:
    read_prompt_file(path)
  msg = str(e.value)
  assert str(path) in msg and "line 2" in msg
  assert "'{\"prompt\": techno}'" in msg and "invalid JSON" in msg


def test_jsonl_bad_objects(tmp_path):
  path = write(tmp_path, "p.jsonl", '{"prompt": "a", "end": "b", '
               '"transition_chunks": 0}\n')
  with pytest.raises(PromptFileError, match="line 1.*>= 1"):
    read_prompt_file(path)
  path = write(tmp_path, "q.jsonl", '"a"\n[1, 2]\n')
  with pytest.raises(PromptFileError, match="line 2.*got list"):
    read_prompt_file(path)
  path = write(tmp_path, "r.jsonl", '{"promt": "a"}\n')
  with pytest.raises(PromptFileError, match=r"unknown key\(s\) \['promt'\]"):
    read_prompt_file(path)


@pytest.mark.parametrize("name, text", [
    ("e.txt", ""), ("c.txt", "# only a comment\n\n"), ("e.csv", ""),
    ("h.csv", "prompt,end\n"), ("e.jsonl", "\n")])
def test_empty_file(tmp_path, name, text):
  path = write(tmp_path, name, text)
  with pytest.raises(PromptFileError, match="no prompts found") as e:
    read_prompt_file(path)
  assert str(path) in str(e.value)


def test_unknown_extension_and_missing_file(tmp_path):
  path = write(tmp_path, "p.yaml", "- techno\n")
  with pytest.raises(PromptFileError, match=r"'\.yaml'.*\.txt, \.csv, "
                     r"\.jsonl"):
    read_prompt_file(path)
  missing = tmp_path / "nope.txt"
  with pytest.raises(PromptFileError, match="does not exist") as e:
    read_prompt_file(missing)
  assert str(missing) in str(e.value)


# ---- make_transitions --------------------------------------------------------
def test_make_transitions_deterministic_and_distinct():
  recs = records(6) + [R("prompt 0"), R("x", "y", 3)]
  a = make_transitions(recs, pairs=10, chunks=5, seed=1)
  assert a == make_transitions(recs, pairs=10, chunks=5, seed=1)
  assert a != make_transitions(recs, pairs=10, chunks=5, seed=2)
  assert len(a) == 10 and len(set(a)) == 10
  plain = {f"prompt {i}" for i in range(6)}
  for r in a:
    assert r.start != r.end and {r.start, r.end} <= plain
    assert r.transition_chunks == 5


def test_make_transitions_all_pairs_and_errors():
  every = make_transitions(records(3), pairs=6, chunks=2, seed=0)
  assert {(r.start, r.end) for r in every} == {
      (f"prompt {a}", f"prompt {b}") for a in range(3) for b in range(3)
      if a != b}
  with pytest.raises(ValueError, match="only make 6 ordered pairs"):
    make_transitions(records(3), pairs=7, chunks=2, seed=0)
  with pytest.raises(ValueError, match="at least 2 distinct"):
    make_transitions([R("a"), R("a")], pairs=1, chunks=2, seed=0)


# ---- grain dataset -----------------------------------------------------------
def test_same_seed_same_order_different_seed_different_order():
  recs = records(20)
  a = take(iter(prompt_dataset(recs, seed=3)), 40)
  assert a == take(iter(prompt_dataset(recs, seed=3)), 40)
  assert a != take(iter(prompt_dataset(recs, seed=4)), 40)
  assert a[0] == recs[int(a[0]["start"].split()[1])].to_dict()


def test_every_epoch_is_a_permutation_and_epochs_differ():
  recs = records(10)
  out = [d["start"] for d in take(iter(prompt_dataset(recs, seed=0)), 30)]
  epochs = [out[i:i + 10] for i in range(0, 30, 10)]
  for epoch in epochs:
    assert sorted(epoch) == sorted(r.start for r in recs)
  assert epochs[0] != epochs[1]  # Reshuffled each epoch.
  plain = take(iter(prompt_dataset(recs, seed=0, shuffle=False)), 12)
  assert [d["start"] for d in plain] == [f"prompt {i}" for i in
                                         list(range(10)) + [0, 1]]


def test_process_shards_are_disjoint_and_cover():
  recs = records(7)
  shards = [{d["start"] for d in take(iter(prompt_dataset(
      recs, seed=0, process_index=p, process_count=2)), 8)} for p in (0, 1)]
  assert shards[0] & shards[1] == set()
  assert shards[0] | shards[1] == {r.start for r in recs}
  assert len(shards[0]) == 4 and len(shards[1]) == 3


def test_fewer_prompts_than_processes():
  with pytest.raises(ValueError, match="process 2 would get none"):
    prompt_dataset(records(2), seed=0, process_index=2, process_count=3)
  with pytest.raises(ValueError, match="process_index"):
    prompt_dataset(records(2), seed=0, process_index=2, process_count=2)


def test_batches_are_lists_of_dicts():
  recs = [R("a"), R("b", "c", 2), R("d")]
  batches = take(iter(prompt_dataset(recs, seed=0, shuffle=False,
                                     batch_size=2)), 2)
  assert batches == [[recs[0].to_dict(), recs[1].to_dict()],
                     [recs[2].to_dict(), recs[0].to_dict()]]


@pytest.mark.parametrize("batch_size", [None, 3])
def test_state_resumes_exactly(batch_size):
  ds = prompt_dataset(records(5) + [R("a", "b", 2)], seed=7,
                      batch_size=batch_size)
  full = take(iter(ds), 12)
  it = iter(ds)
  assert take(it, 7) == full[:7]
  state = iterator_state_to_json(it)
  json.loads(state)  # Plain JSON.
  assert take(restore_iterator(ds, state), 5) == full[7:12]
  # grain's own get_state / set_state does the same.
  it2 = iter(ds)
  it2.set_state(it.get_state())
  assert take(it2, 5) == full[7:12]


def test_restore_rejects_non_json():
  with pytest.raises(ValueError, match="not JSON"):
    restore_iterator(prompt_dataset(records(2), seed=0), "{oops")
