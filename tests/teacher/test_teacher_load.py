"""Tests for teacher loading: gin configs, parameter checks, orbax teacher
checkpoints and the t5x import (reference/magenta_rt_v1.md §2.2, §6.2).
"""

from __future__ import annotations

import json
import pathlib

import flax.serialization
import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from mrt_distill.geometry import MRT_V1, TINY
from mrt_distill.teacher import load, t5x_format
from mrt_distill.teacher.load import (TeacherLoadError, check_params,
                                      import_t5x, load_teacher,
                                      load_teacher_config, save_teacher)
from mrt_distill.teacher.model import TeacherModel
from mrt_distill.teacher.model import numpy_init_params

# Small zarr chunks so every large tiny-model tensor spans several chunk files.
_SMALL_CHUNK = 2048

_TINY_MACROS = """\
GEOMETRY = 'tiny'
EMBED_DIM = 32
NUM_HEADS = 2
HEAD_DIM = 16
MLP_DIM = 64
DEPTH_MLP_DIM = 48
NUM_ENCODER_LAYERS = 2
NUM_TEMPORAL_LAYERS = 2
NUM_DEPTH_LAYERS = 2
TEMPORAL_RELPOS_BUCKETS = 32
TEMPORAL_RELPOS_MAX_DISTANCE = 32
DEPTH_RELPOS_BUCKETS = 8
DEPTH_RELPOS_MAX_DISTANCE = 8
DROPOUT_RATE = 0.0
DEPTH_DROPOUT_RATE = 0.0
ACTIVATION_DTYPE = 'float32'
"""




@pytest.fixture(scope="module")
def cfg():
  return load_teacher_config("tiny")


@pytest.fixture(scope="module")
def params(cfg):
  return numpy_init_params(cfg, 0)


def _write_gin(tmp_path, text, name="t.gin"):
  p = tmp_path / name
  p.write_text(text)
  return p


# ---- gin configs ------------------------------------------------------------------
def test_tiny_config():
  c = load_teacher_config("tiny")
  assert c.name == "tiny" and c.geometry is TINY
  assert (c.d_model, c.num_heads, c.head_dim, c.mlp_dim, c.depth_mlp_dim) == (
      32, 2, 16, 64, 48)
  assert (c.num_encoder_layers, c.num_temporal_layers, c.num_depth_layers) == (
      2, 2, 2)
  assert c.activation_dtype == "float32" and c.dropout_rate == 0.0


def test_base_config():
  c = load_teacher_config("base")
  assert c.name == "base" and c.geometry is MRT_V1
  assert (c.d_model, c.num_heads, c.head_dim, c.mlp_dim, c.depth_mlp_dim) == (
      768, 12, 64, 2048, 2048)
  assert (c.num_encoder_layers, c.num_temporal_layers, c.num_depth_layers) == (
      12, 20, 4)
  assert (c.temporal_relpos_buckets, c.temporal_relpos_max_distance,
          c.depth_relpos_buckets, c.depth_relpos_max_distance) == (
              128, 128, 16, 16)
  assert (c.dropout_rate, c.depth_dropout_rate) == (0.1, 0.0)
  assert c.activation_dtype == "bfloat16"
  assert c.vocab_rows == 29824


def test_large_config_inherits_through_include():
  c = load_teacher_config("large")
  assert c.name == "large" and c.geometry is MRT_V1
  assert (c.d_model, c.num_heads, c.head_dim, c.mlp_dim, c.depth_mlp_dim) == (
      1024, 16, 64, 2816, 2816)
  assert c.num_encoder_layers == 24
  # Not set in teacher_large.gin: inherited from teacher_base.gin.
  assert "NUM_TEMPORAL_LAYERS" not in (load.GIN_DIR / "teacher_large.gin"
                                       ).read_text()
  assert (c.num_temporal_layers, c.num_depth_layers) == (20, 4)
  assert c.temporal_relpos_buckets == 128 and c.dropout_rate == 0.1


@pytest.mark.parametrize("spelling", ["tiny", "teacher_tiny",
                                      "teacher_tiny.gin"])
def test_config_name_spellings(spelling):
  assert load_teacher_config(spelling) == load_teacher_config("tiny")


def test_config_from_path_and_later_binding_wins(tmp_path):
  p = _write_gin(tmp_path, _TINY_MACROS + "EMBED_DIM = 48\n", "mine.gin")
  c = load_teacher_config(p)
  assert c.d_model == 48 and c.name == "mine"


def test_include_relative_to_including_file(tmp_path):
  _write_gin(tmp_path, _TINY_MACROS, "parent.gin")
  p = _write_gin(tmp_path, "include 'parent.gin'\nNUM_HEADS = 4\n", "kid.gin")
  c = load_teacher_config(p)
  assert c.num_heads == 4 and c.d_model == 32


def test_macro_reference(tmp_path):
  text = _TINY_MACROS.replace("DEPTH_MLP_DIM = 48", "DEPTH_MLP_DIM = %MLP_DIM")
  assert load_teacher_config(_write_gin(tmp_path, text)).depth_mlp_dim == 64
  text = _TINY_MACROS.replace("MLP_DIM = 64\n", "MLP_DIM = %DEPTH_MLP_DIM\n", 1)
  with pytest.raises(TeacherLoadError, match="before it is defined"):
    load_teacher_config(_write_gin(tmp_path, text, "u.gin"))


def test_gin_that_does_not_parse_names_file_and_line(tmp_path):
  text = _TINY_MACROS.replace("NUM_HEADS = 2", "NUM_HEADS = = 2")
  line = text.splitlines().index("NUM_HEADS = = 2") + 1
  p = _write_gin(tmp_path, text, "broken.gin")
  with pytest.raises(TeacherLoadError) as e:
    load_teacher_config(p)
  msg = str(e.value)
  assert str(p) in msg
  assert f"line {line}" in msg


def test_gin_with_unclosed_bracket_raises_teacher_load_error(tmp_path):
  p = _write_gin(tmp_path, "GEOMETRY = 'tiny'\nEMBED_DIM = (32\n", "open.gin")
  with pytest.raises(TeacherLoadError, match="open.gin"):
    load_teacher_config(p)


def test_unknown_macro_lists_known(tmp_path):
  p = _write_gin(tmp_path, _TINY_MACROS + "FANCY_DIM = 3\n")
  with pytest.raises(TeacherLoadError) as e:
    load_teacher_config(p)
  msg = str(e.value)
  assert "FANCY_DIM" in msg and "known" in msg
  assert "EMBED_DIM" in msg and "NUM_TEMPORAL_LAYERS" in msg
  assert str(p) in msg


def test_unused_num_decoder_layers_is_accepted(tmp_path):
  p = _write_gin(tmp_path, _TINY_MACROS + "NUM_DECODER_LAYERS = 99\n")
  assert load_teacher_config(p).num_temporal_layers == 2


def test_missing_macro(tmp_path):
  text = _TINY_MACROS.replace("NUM_HEADS = 2\n", "")
  p = _write_gin(tmp_path, text)
  with pytest.raises(TeacherLoadError, match=r"missing macro\(s\) \['NUM_HEADS'\]"):
    load_teacher_config(p)


def test_binding_is_rejected(tmp_path):
  p = _write_gin(tmp_path, _TINY_MACROS + "Encoder.num_layers = 3\n")
  with pytest.raises(TeacherLoadError, match="macros only"):
    load_teacher_config(p)


def test_invalid_value_names_file(tmp_path):
  p = _write_gin(tmp_path, _TINY_MACROS.replace("NUM_HEADS = 2", "NUM_HEADS = 0"))
  with pytest.raises(TeacherLoadError, match="num_heads") as e:
    load_teacher_config(p)
  assert str(p) in str(e.value)


def test_unknown_geometry_names_file(tmp_path):
  p = _write_gin(tmp_path, _TINY_MACROS.replace("'tiny'", "'nope'"), "g.gin")
  with pytest.raises(TeacherLoadError, match="g.gin"):
    load_teacher_config(p)


def test_unknown_geometry_lists_known(tmp_path):
  p = _write_gin(tmp_path, _TINY_MACROS.replace("'tiny'", "'nope'"), "g.gin")
  with pytest.raises(ValueError, match="known"):
    load_teacher_config(p)


def test_gin_not_found_lists_known():
  with pytest.raises(TeacherLoadError) as e:
    load_teacher_config("medium")
  msg = str(e.value)
  for known in ("teacher_base", "teacher_large", "teacher_tiny"):
    assert known in msg
  assert "medium" in msg


def test_missing_include_names_file(tmp_path):
  p = _write_gin(tmp_path, "include 'nothere.gin'\n")
  with pytest.raises(TeacherLoadError, match="nothere.gin"):
    load_teacher_config(p)


# ---- check_params --------------------------------------------------------------------
def test_check_params_accepts_exact_tree(cfg, params):
  check_params(params, cfg)


def test_check_params_lists_problems(cfg, params):
  flat = flatten_dict(params, sep=".")
  del flat["encoder.layers_1.mlp.wo.kernel"]
  flat["encoder.relpos_bias.rel_embedding"] = np.zeros((2, 32), np.float32)
  flat["decoder.decoder_norm.scale"] = np.zeros((31,), np.float32)
  with pytest.raises(TeacherLoadError) as e:
    check_params(unflatten_dict(flat, sep="."), cfg)
  msg = str(e.value)
  assert "missing (1): encoder.layers_1.mlp.wo.kernel" in msg
  assert "unexpected (1): encoder.relpos_bias.rel_embedding" in msg
  assert "decoder.decoder_norm.scale: (31,) != expected (32,)" in msg


# ---- t5x import -----------------------------------------------------------------------
def _write_t5x(root: pathlib.Path, params, step=100):
  ckpt = root / f"checkpoint_{step}"
  t5x_format.write_t5x_checkpoint(ckpt, jax.tree.map(np.asarray, params),
                                  step=step, max_chunk_bytes=_SMALL_CHUNK)
  return ckpt


@pytest.fixture(scope="module")
def imported(tmp_path_factory, params):
  """(t5x root, checkpoint dir, teacher dir, import report)."""
  root = tmp_path_factory.mktemp("t5x")
  ckpt = _write_t5x(root, params)
  dst = tmp_path_factory.mktemp("teacher") / "tiny_teacher"
  report = import_t5x(root, dst, gin="tiny")
  return root, ckpt, dst, report


def test_t5x_checkpoint_is_multi_chunk_with_step_100(imported):
  _, ckpt, _, _ = imported
  emb_dir = ckpt / "target.token_embedder.embedding"
  chunks = [p for p in emb_dir.iterdir() if not p.name.startswith(".")]
  assert len(chunks) > 1  # 256 x 32 f32 = 32 KiB in 2 KiB chunks
  contents = flax.serialization.msgpack_restore(
      (ckpt / "checkpoint").read_bytes())
  assert int(np.asarray(contents["optimizer"]["state"]["step"])) == 100
  assert t5x_format.read_t5x_checkpoint(ckpt).step == 100


def test_import_report(cfg, imported):
  _, _, dst, report = imported
  assert report["step"] == 100
  assert report["tensors"] == 70
  assert report["params"] == 83_536
  assert report["config"] == "tiny"
  meta = json.loads((dst / "teacher.json").read_text())
  assert meta["step"] == 100 and meta["geometry"] == "tiny"
  assert meta["gin"] == "tiny"


def test_import_parity_exact(cfg, params, imported):
  _, _, dst, _ = imported
  loaded, loaded_cfg = load_teacher(dst)
  assert loaded_cfg == cfg
  src = flatten_dict(params, sep=".")
  got = flatten_dict(loaded, sep=".")
  assert set(got) == set(src)
  for k in src:
    np.testing.assert_array_equal(np.asarray(got[k]), src[k], err_msg=k)

  g = cfg.geometry
  rng = np.random.default_rng(7)
  enc = rng.integers(2, g.vocab_size, (2, g.encoder_length)).astype(np.int32)
  tgt = g.codec_to_ids(rng.integers(0, g.codebook_size, (
      2, g.chunk_frames, g.target_levels))).reshape(2, -1)
  model = TeacherModel(cfg)
  fwd = jax.jit(lambda p, e, t: model.apply({"params": p}, e, t))
  want = np.asarray(fwd(params, enc, tgt))
  have = np.asarray(fwd(jax.tree.map(np.asarray, loaded), enc, tgt))
  np.testing.assert_array_equal(have, want)
  assert np.isfinite(want).all() and np.abs(want).max() > 0


def test_load_teacher_with_explicit_config(cfg, imported):
  _, _, dst, _ = imported
  loaded, c = load_teacher(dst, cfg)
  assert c is cfg
  with pytest.raises(TeacherLoadError, match="geometry"):
    load_teacher(dst, load_teacher_config("base"))


def _import_expect_error(tmp_path, params):
  root = tmp_path / "src"
  _write_t5x(root, params)
  dst = tmp_path / "dst"
  with pytest.raises(TeacherLoadError) as e:
    import_t5x(root, dst, gin="tiny")
  assert not dst.exists(), "a failed import must not write a checkpoint"
  return str(e.value)


def test_import_missing_parameter(tmp_path, params):
  flat = flatten_dict(params, sep=".")
  del flat["decoder.decoder.depth_decoder.depth_layers_1.mlp.wi_1.kernel"]
  msg = _import_expect_error(tmp_path, unflatten_dict(flat, sep="."))
  assert "missing (1)" in msg
  assert "decoder.decoder.depth_decoder.depth_layers_1.mlp.wi_1.kernel" in msg


def test_import_extra_parameter(tmp_path, params):
  flat = flatten_dict(params, sep=".")
  flat["encoder.relpos_bias.rel_embedding"] = np.ones((2, 32), np.float32)
  msg = _import_expect_error(tmp_path, unflatten_dict(flat, sep="."))
  assert "unexpected (1)" in msg
  assert "encoder.relpos_bias.rel_embedding" in msg


def test_import_wrong_vocab_mentions_geometry(tmp_path, params):
  flat = flatten_dict(params, sep=".")
  flat["token_embedder.embedding"] = flat["token_embedder.embedding"][:128]
  flat["decoder.logits_dense.kernel"] = flat["decoder.logits_dense.kernel"][
      :, :128]
  msg = _import_expect_error(tmp_path, unflatten_dict(flat, sep="."))
  assert "128 rows" in msg and "256" in msg
  assert "geometry" in msg
  assert "token_embedder.embedding: (128, 32) != expected (256, 32)" in msg


def test_zstd_multi_device_and_gzip_checkpoints_import_the_same(
    tmp_path, params):
  """The same weights saved the t5x way (gzip, <= max_chunk_bytes chunks) and
  the multi-device way (jax's serialization: zstd, one chunk per shard of 4)
  import to bit-identical parameters."""
  roots = {}
  for how, kw in (("gzip", {"max_chunk_bytes": _SMALL_CHUNK}),
                  ("zstd", {"compress": "zstd", "shards": 4})):
    roots[how] = tmp_path / how
    t5x_format.write_t5x_checkpoint(roots[how] / "checkpoint_100",
                                    jax.tree.map(np.asarray, params), step=100,
                                    **kw)
  emb = roots["zstd"] / "checkpoint_100" / "target.token_embedder.embedding"
  meta = json.loads((emb / ".zarray").read_text())
  assert meta["compressor"]["id"] == "zstd" and meta["chunks"] == [256, 8]
  got = {}
  for how, root in roots.items():
    import_t5x(root, tmp_path / f"teacher_{how}", gin="tiny")
    got[how] = flatten_dict(load_teacher(tmp_path / f"teacher_{how}")[0],
                            sep=".")
  src = flatten_dict(params, sep=".")
  assert set(got["zstd"]) == set(got["gzip"]) == set(src)
  for k in src:
    np.testing.assert_array_equal(np.asarray(got["zstd"][k]).view(np.uint32),
                                  np.asarray(got["gzip"][k]).view(np.uint32))
    np.testing.assert_array_equal(np.asarray(got["zstd"][k]), src[k])


def _restore_as(ckpt, name, arr, dtype_name):
  """Replaces array `name` of a t5x checkpoint by `arr` stored as
  `dtype_name` (spec and .zarray agree, as a foreign writer would have it)."""
  import shutil

  import tensorstore as ts
  contents = flax.serialization.msgpack_restore(
      (ckpt / "checkpoint").read_bytes())
  node = contents["optimizer"]["target"]
  for part in name.split("."):
    node = node[part]
  node["dtype"] = dtype_name
  (ckpt / "checkpoint").write_bytes(
      flax.serialization.msgpack_serialize(contents))
  adir = ckpt / f"target.{name}"
  shutil.rmtree(adir)
  ts.open({"driver": "zarr", "dtype": dtype_name,
           "kvstore": {"driver": "file", "path": str(adir)},
           "metadata": {"shape": list(arr.shape), "chunks": list(arr.shape),
                        "compressor": {"id": "zstd"}}},
          create=True).result().write(arr).result()


def test_import_refuses_a_parameter_stored_as_int(tmp_path, params):
  root = tmp_path / "src"
  ckpt = _write_t5x(root, params)
  _restore_as(ckpt, "encoder.encoder_norm.scale", np.ones(32, np.int32),
              "int32")
  with pytest.raises(
      TeacherLoadError,
      match=r"1 parameter\(s\) stored in a dtype the teacher config 'tiny' "
      r"cannot take: encoder\.encoder_norm\.scale \(int32\)\. Its parameters "
      r"are float32; supported stored dtypes: float32, bfloat16, float16"):
    import_t5x(root, tmp_path / "dst", gin="tiny")
  assert not (tmp_path / "dst").exists()


def test_import_takes_a_bfloat16_parameter_exactly(tmp_path, params):
  import ml_dtypes
  root = tmp_path / "src"
  ckpt = _write_t5x(root, params)
  scale = np.asarray(params["encoder"]["encoder_norm"]["scale"])
  bf = scale.astype(ml_dtypes.bfloat16)
  _restore_as(ckpt, "encoder.encoder_norm.scale", bf, "bfloat16")
  import_t5x(root, tmp_path / "dst", gin="tiny")
  got = load_teacher(tmp_path / "dst")[0]["encoder"]["encoder_norm"]["scale"]
  np.testing.assert_array_equal(np.asarray(got), bf.astype(np.float32))


def test_import_reports_and_logs_the_dropped_adafactor_slots(
    tmp_path, params, caplog):
  flat = flatten_dict(params, sep=".")
  slots = {}
  for k, v in flat.items():
    if v.ndim == 2:
      slots[k + ".v_row"] = np.ones(v.shape[0], np.float32)
      slots[k + ".v_col"] = np.ones(v.shape[1], np.float32)
    else:
      slots[k + ".v"] = np.ones(v.shape, np.float32)
  root = tmp_path / "src"
  t5x_format.write_t5x_checkpoint(
      root / "checkpoint_3", jax.tree.map(np.asarray, params), step=3,
      param_states=t5x_format.unflatten(slots))
  nbytes = sum(v.nbytes for v in slots.values())
  with caplog.at_level("WARNING", logger="mrt_distill.teacher.load"):
    report = import_t5x(root, tmp_path / "dst", gin="tiny")
  assert report["dropped_optimizer_slots"] == {"tensors": len(slots),
                                               "bytes": nbytes}
  assert (f"dropped the {len(slots)} optimizer (Adafactor) slot tensors"
          in caplog.text)
  assert f"({nbytes} bytes stored, {nbytes / 1e6:.2f} MB)" in caplog.text
  assert "include_optimizer_state=True" in caplog.text


def test_load_teacher_without_metadata(tmp_path):
  (tmp_path / "params").mkdir()
  with pytest.raises(TeacherLoadError, match="teacher.json") as e:
    load_teacher(tmp_path)
  assert "not a teacher checkpoint" in str(e.value)


def test_save_teacher_rejects_wrong_tree(tmp_path, cfg, params):
  flat = flatten_dict(params, sep=".")
  del flat["encoder.encoder_norm.scale"]
  with pytest.raises(TeacherLoadError, match="encoder.encoder_norm.scale"):
    save_teacher(tmp_path / "x", unflatten_dict(flat, sep="."), cfg)
  assert not (tmp_path / "x").exists()


def test_for_backend_serves_f32_on_cpu_and_keeps_params_compatible():
  from mrt_distill.teacher.config import for_backend
  base = load.load_teacher_config("base")
  assert base.activation_dtype == "bfloat16"
  assert jax.default_backend() == "cpu"
  run = for_backend(base)
  assert run.activation_dtype == "float32"
  # Only the compute dtype changes: same architecture, same param tree.
  assert run.replace(activation_dtype="bfloat16") == base
  assert for_backend(base, "bfloat16") is base
  ref = load.load_teacher_config("tiny")
  assert for_backend(ref) is ref  # already f32: untouched
  with pytest.raises(ValueError, match="dtype 'fp16'.*'auto'"):
    for_backend(base, "fp16")
