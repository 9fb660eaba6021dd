"""Tests for the legacy t5x checkpoint reader/writer (no t5x import)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil

import flax.serialization
import numpy as np
import pytest
import tensorstore as ts

from mrt_distill.teacher import t5x_format
from mrt_distill.teacher.t5x_format import T5xFormatError

# 48 x 10 float32 = 1920 bytes; with max_chunk_bytes=512 t5x's policy gives
# chunks of (12, 10) = 480 bytes, i.e. 4 chunk files 0.0 .. 3.0.
_SMALL_CHUNK = 512


def _params(seed=0):
  rng = np.random.default_rng(seed)
  f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
  return {
      "decoder": {
          "decoder": {
              "temporal_decoder": {
                  "layers_3": {"mlp": {"wo": {"kernel": f32(48, 10)}}},
                  "decoder_norm": {"scale": f32(10)},
              },
          },
      },
      "encoder": {
          "token_embedder": {"embedding": f32(7, 10)},
          "relpos_bias": {"rel_embedding": f32(4, 32)},
      },
  }


def _slots(params):
  """t5x-Adafactor-shaped slots: v for 1-D, v_row/v_col for 2-D params."""
  flat = {}
  for name, x in t5x_format.flatten(params).items():
    if x.ndim == 1:
      flat[name + ".v"] = np.abs(x) + 1.0
    else:
      flat[name + ".v_row"] = np.abs(x).mean(1) + 2.0
      flat[name + ".v_col"] = np.abs(x).mean(0) + 3.0
  return t5x_format.unflatten(flat)


def _write(tmp_path, step=1234, **kw):
  ckpt = tmp_path / f"checkpoint_{step}"
  params = _params()
  kw.setdefault("max_chunk_bytes", _SMALL_CHUNK)
  t5x_format.write_t5x_checkpoint(ckpt, params, step, **kw)
  return ckpt, params


def _kernel_dir(ckpt):
  return ckpt / "target.decoder.decoder.temporal_decoder.layers_3.mlp.wo.kernel"


def _msgpack(ckpt):
  return flax.serialization.msgpack_restore((ckpt / "checkpoint").read_bytes())


# ---------------------------------------------------------------------------
# Round trips.


def test_round_trip_is_bit_identical(tmp_path):
  ckpt, params = _write(tmp_path)
  got = t5x_format.read_t5x_checkpoint(ckpt)
  want = t5x_format.flatten(params)
  flat = t5x_format.flatten(got.params)
  assert sorted(flat) == sorted(want) == got.names
  for k, v in want.items():
    assert flat[k].dtype == np.float32
    assert flat[k].shape == v.shape
    np.testing.assert_array_equal(flat[k].view(np.uint32), v.view(np.uint32))
  assert got.step == 1234
  assert got.param_states is None
  assert got.path == ckpt


def test_step_round_trips_and_is_inline(tmp_path):
  ckpt, _ = _write(tmp_path, step=7)
  assert t5x_format.read_t5x_checkpoint(ckpt).step == 7
  step = _msgpack(ckpt)["optimizer"]["state"]["step"]
  assert isinstance(step, np.ndarray) and int(step) == 7
  assert not (ckpt / "state.step").exists()


def test_optimizer_slots_round_trip_when_requested(tmp_path):
  params = _params()
  slots = _slots(params)
  ckpt = tmp_path / "checkpoint_5"
  t5x_format.write_t5x_checkpoint(ckpt, params, 5, param_states=slots,
                                  max_chunk_bytes=_SMALL_CHUNK)
  assert (ckpt / ("state.param_states.decoder.decoder.temporal_decoder."
                  "layers_3.mlp.wo.kernel.v_row")).is_dir()
  assert (ckpt / ("state.param_states.decoder.decoder.temporal_decoder."
                  "decoder_norm.scale.v")).is_dir()
  assert t5x_format.read_t5x_checkpoint(ckpt).param_states is None
  got = t5x_format.read_t5x_checkpoint(ckpt, include_optimizer_state=True)
  flat, want = (t5x_format.flatten(got.param_states),
                t5x_format.flatten(slots))
  assert sorted(flat) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(flat[k], want[k])


def test_absent_slots_give_none(tmp_path):
  ckpt, _ = _write(tmp_path)
  got = t5x_format.read_t5x_checkpoint(ckpt, include_optimizer_state=True)
  assert got.param_states is None


def test_uncompressed_chunks_read(tmp_path):
  ckpt, params = _write(tmp_path, compress=False)
  zarray = json.loads((_kernel_dir(ckpt) / ".zarray").read_text())
  assert zarray["compressor"] is None
  raw = (_kernel_dir(ckpt) / "0.0").read_bytes()
  assert len(raw) == 12 * 10 * 4  # Raw little-endian float32.
  got = t5x_format.flatten(t5x_format.read_t5x_checkpoint(ckpt).params)
  for k, v in t5x_format.flatten(params).items():
    np.testing.assert_array_equal(got[k], v)


def test_non_float32_params_are_saved_as_float32(tmp_path):
  ckpt = tmp_path / "checkpoint_1"
  t5x_format.write_t5x_checkpoint(
      ckpt, {"a": {"b": np.arange(6, dtype=np.float64).reshape(2, 3)}}, 1)
  got = t5x_format.read_t5x_checkpoint(ckpt).params["a"]["b"]
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, np.arange(6).reshape(2, 3))


def test_inline_msgpack_leaves_are_read(tmp_path):
  """t5x stores unpartitioned arrays inline instead of as a spec."""
  ckpt, params = _write(tmp_path)
  contents = _msgpack(ckpt)
  inline = np.full((3,), 2.5, np.float32)
  contents["optimizer"]["target"]["extra"] = {"bias": inline}
  (ckpt / "checkpoint").write_bytes(
      flax.serialization.msgpack_serialize(contents))
  got = t5x_format.read_t5x_checkpoint(ckpt)
  np.testing.assert_array_equal(got.params["extra"]["bias"], inline)
  assert "extra.bias" in got.names


# ---------------------------------------------------------------------------
# On-disk layout.


def test_layout_matches_t5x(tmp_path):
  ckpt, params = _write(tmp_path)
  assert (ckpt / "checkpoint").is_file()
  dirs = sorted(p.name for p in ckpt.iterdir() if p.is_dir())
  assert dirs == sorted("target." + k for k in t5x_format.flatten(params))
  assert not any(d.startswith("optimizer") for d in dirs)
  assert not list(tmp_path.glob("*.tmp-*"))

  kdir = _kernel_dir(ckpt)
  zarray = json.loads((kdir / ".zarray").read_text())
  assert zarray["zarr_format"] == 2
  assert zarray["dtype"] == "<f4"
  assert zarray["compressor"] == {"id": "gzip", "level": 1}
  assert zarray["shape"] == [48, 10]
  assert zarray["chunks"] == [12, 10]
  assert zarray["order"] == "C"
  assert zarray["filters"] is None
  assert "fill_value" in zarray
  chunk_files = sorted(p.name for p in kdir.iterdir() if p.name != ".zarray")
  assert chunk_files == ["0.0", "1.0", "2.0", "3.0"]
  # gzip-compressed chunk, raw C-order float32 inside.
  block = np.frombuffer(gzip.decompress((kdir / "1.0").read_bytes()),
                        "<f4").reshape(12, 10)
  kernel = params["decoder"]["decoder"]["temporal_decoder"]["layers_3"]
  np.testing.assert_array_equal(block, kernel["mlp"]["wo"]["kernel"][12:24])
  # Small arrays fit one chunk; 1-D chunk files are named "0".
  sdir = ckpt / "target.decoder.decoder.temporal_decoder.decoder_norm.scale"
  assert sorted(p.name for p in sdir.iterdir()) == [".zarray", "0"]
  edir = ckpt / "target.encoder.token_embedder.embedding"
  assert sorted(p.name for p in edir.iterdir()) == [".zarray", "0.0"]


def test_msgpack_holds_relative_tensorstore_specs(tmp_path):
  ckpt, _ = _write(tmp_path)
  contents = _msgpack(ckpt)
  assert contents["version"] == 3
  assert set(contents) == {"version", "optimizer"}
  assert set(contents["optimizer"]) == {"target", "state"}
  assert set(contents["optimizer"]["state"]) == {"step", "param_states"}
  spec = contents["optimizer"]["target"]["decoder"]["decoder"][
      "temporal_decoder"]["layers_3"]["mlp"]["wo"]["kernel"]
  assert spec["driver"] == "zarr"
  assert spec["dtype"] == "float32"
  assert spec["kvstore"]["driver"] == "file"
  path = spec["kvstore"]["path"]
  assert not os.path.isabs(path)
  assert path.rstrip("/") == _kernel_dir(ckpt).name
  assert spec["metadata"]["shape"] == [48, 10]
  assert spec["metadata"]["chunks"] == [12, 10]
  assert spec["metadata"]["compressor"]["id"] == "gzip"


def test_tensorstore_reads_arrays_independently(tmp_path):
  ckpt, params = _write(tmp_path)
  kdir = _kernel_dir(ckpt)
  store = ts.open({"driver": "zarr",
                   "kvstore": {"driver": "file", "path": str(kdir)}}).result()
  kernel = params["decoder"]["decoder"]["temporal_decoder"]["layers_3"]
  np.testing.assert_array_equal(store.read().result(),
                                kernel["mlp"]["wo"]["kernel"])
  # The msgpack spec, made absolute, opens the same array.
  spec = _msgpack(ckpt)["optimizer"]["target"]["encoder"]["relpos_bias"][
      "rel_embedding"]
  spec["kvstore"]["path"] = str(ckpt / spec["kvstore"]["path"])
  np.testing.assert_array_equal(
      ts.open(spec).result().read().result(),
      params["encoder"]["relpos_bias"]["rel_embedding"])


def test_reads_tensorstore_written_uncompressed_multichunk(tmp_path):
  """Arrays written by TensorStore itself (edge chunks, compressor null)."""
  x = np.arange(7 * 5, dtype=np.float32).reshape(7, 5)
  adir = tmp_path / "arr"
  store = ts.open({"driver": "zarr",
                   "kvstore": {"driver": "file", "path": str(adir)},
                   "metadata": {"shape": [7, 5], "chunks": [3, 2],
                                "dtype": "<f4", "compressor": None}},
                  create=True).result()
  store.write(x).result()
  np.testing.assert_array_equal(t5x_format.read_zarr_array(adir), x)


def test_choose_chunk_shape_follows_t5x_policy():
  assert t5x_format.choose_chunk_shape((48, 10), 4, 512) == [12, 10]
  assert t5x_format.choose_chunk_shape((48, 10), 4, 10**9) == [48, 10]
  assert t5x_format.choose_chunk_shape((7,), 4, 8) == [1]
  assert t5x_format.choose_chunk_shape((), 4, 1) == []
  # Default: 64 MiB of float32 = 2**24 elements.
  chunk = t5x_format.choose_chunk_shape((8192, 4096), 4)
  assert np.prod(chunk) * 4 <= 64 * 2**20 and 8192 % chunk[0] == 0


# ---------------------------------------------------------------------------
# Directory resolution.


def test_parent_dir_picks_largest_step(tmp_path, caplog):
  t5x_format.write_t5x_checkpoint(tmp_path / "checkpoint_9", _params(1), 9)
  t5x_format.write_t5x_checkpoint(tmp_path / "checkpoint_100", _params(2), 100)
  (tmp_path / "checkpoint_200.tmp-123").mkdir()  # Unfinished; ignored.
  with caplog.at_level(logging.INFO, logger=t5x_format.__name__):
    got = t5x_format.read_t5x_checkpoint(tmp_path)
  assert got.step == 100
  assert got.path == tmp_path / "checkpoint_100"
  assert "checkpoint_100" in caplog.text and "latest" in caplog.text
  np.testing.assert_array_equal(
      got.params["encoder"]["token_embedder"]["embedding"],
      _params(2)["encoder"]["token_embedder"]["embedding"])


def test_accepts_msgpack_file_path(tmp_path):
  ckpt, _ = _write(tmp_path)
  assert t5x_format.read_t5x_checkpoint(ckpt / "checkpoint").step == 1234


def test_refuses_to_overwrite(tmp_path):
  ckpt, params = _write(tmp_path)
  with pytest.raises(T5xFormatError, match="already exists"):
    t5x_format.write_t5x_checkpoint(ckpt, params, 1)


# ---------------------------------------------------------------------------
# Errors.


def test_error_missing_directory(tmp_path):
  with pytest.raises(T5xFormatError, match=r"nope does not exist"):
    t5x_format.read_t5x_checkpoint(tmp_path / "nope")


def test_error_no_msgpack_file(tmp_path):
  ckpt, _ = _write(tmp_path)
  (ckpt / "checkpoint").unlink()
  with pytest.raises(T5xFormatError, match=r"no 'checkpoint' msgpack"):
    t5x_format.read_t5x_checkpoint(ckpt)
  # Via the parent, too.
  with pytest.raises(T5xFormatError, match=r"checkpoint_1234.*no 'checkpoint'"):
    t5x_format.read_t5x_checkpoint(tmp_path)


def test_error_unparsable_msgpack(tmp_path):
  ckpt, _ = _write(tmp_path)
  (ckpt / "checkpoint").write_bytes(b"\xc1\xc1 not msgpack")
  with pytest.raises(T5xFormatError, match=r"Could not parse.*checkpoint"):
    t5x_format.read_t5x_checkpoint(ckpt)


def test_error_msgpack_not_t5x(tmp_path):
  ckpt, _ = _write(tmp_path)
  (ckpt / "checkpoint").write_bytes(
      flax.serialization.msgpack_serialize({"params": {"a": np.ones(2)}}))
  with pytest.raises(T5xFormatError, match="'optimizer'"):
    t5x_format.read_t5x_checkpoint(ckpt)


def test_error_missing_array_dir(tmp_path):
  ckpt, _ = _write(tmp_path)
  shutil.rmtree(_kernel_dir(ckpt))
  with pytest.raises(T5xFormatError,
                     match=r"layers_3\.mlp\.wo\.kernel.*does not exist"):
    t5x_format.read_t5x_checkpoint(ckpt)


def test_error_missing_zarray(tmp_path):
  ckpt, _ = _write(tmp_path)
  (_kernel_dir(ckpt) / ".zarray").unlink()
  with pytest.raises(T5xFormatError, match=r"wo\.kernel/\.zarray is missing"):
    t5x_format.read_t5x_checkpoint(ckpt)


@pytest.mark.parametrize("text", ["{not json", '{"zarr_format": 2}',
                                  '{"shape": [48], "chunks": [12, 10], '
                                  '"dtype": "<f4"}'])
def test_error_corrupt_zarray(tmp_path, text):
  ckpt, _ = _write(tmp_path)
  (_kernel_dir(ckpt) / ".zarray").write_text(text)
  with pytest.raises(T5xFormatError, match=r"wo\.kernel/\.zarray.*corrupt"):
    t5x_format.read_t5x_checkpoint(ckpt)


def test_error_missing_chunk(tmp_path):
  ckpt, _ = _write(tmp_path)
  (_kernel_dir(ckpt) / "2.0").unlink()
  with pytest.raises(T5xFormatError, match=r"wo\.kernel/2\.0 is missing"):
    t5x_format.read_t5x_checkpoint(ckpt)


def test_error_chunk_data_shape_mismatch(tmp_path):
  ckpt, _ = _write(tmp_path, compress=False)
  kdir = _kernel_dir(ckpt)
  (kdir / "1.0").write_bytes((kdir / "1.0").read_bytes()[:-4])
  with pytest.raises(T5xFormatError,
                     match=r"Shape mismatch in .*wo\.kernel/1\.0"):
    t5x_format.read_t5x_checkpoint(ckpt)


def test_error_zarray_shape_disagrees_with_data(tmp_path):
  ckpt, _ = _write(tmp_path)
  zpath = _kernel_dir(ckpt) / ".zarray"
  meta = json.loads(zpath.read_text())
  meta["chunks"] = [12, 20]  # Chunk files hold 12 x 10.
  zpath.write_text(json.dumps(meta))
  with pytest.raises(T5xFormatError,
                     match=r"wo\.kernel/0\.0 does not decompress/decode as "
                     r"gzip chunks \(12, 20\) of <f4"):
    t5x_format.read_t5x_checkpoint(ckpt)


def test_error_zarray_shape_disagrees_with_msgpack(tmp_path):
  ckpt, _ = _write(tmp_path)
  zpath = _kernel_dir(ckpt) / ".zarray"
  meta = json.loads(zpath.read_text())
  meta["shape"] = [24, 10]  # Still decodable, but not what the spec says.
  zpath.write_text(json.dumps(meta))
  with pytest.raises(T5xFormatError, match=r"Shape mismatch for .*wo\.kernel"):
    t5x_format.read_t5x_checkpoint(ckpt)


def test_error_corrupt_gzip_chunk(tmp_path):
  ckpt, _ = _write(tmp_path)
  (_kernel_dir(ckpt) / "0.0").write_bytes(b"garbage")
  with pytest.raises(T5xFormatError,
                     match=r"wo\.kernel/0\.0 does not decompress"):
    t5x_format.read_t5x_checkpoint(ckpt)


# ---------------------------------------------------------------------------
# Helpers.


def test_flatten_unflatten_round_trip():
  tree = {"a": {"b": np.ones(2), "c": {"d": np.zeros(3)}}, "e": np.ones(1),
          "empty": {}}
  flat = t5x_format.flatten(tree)
  assert list(flat) == ["a.b", "a.c.d", "e"]
  back = t5x_format.unflatten(flat)
  assert set(back) == {"a", "e"} and back["a"]["c"]["d"].shape == (3,)
  with pytest.raises(ValueError, match="'x.y'"):
    t5x_format.flatten({"x.y": np.ones(1)})
  with pytest.raises(ValueError, match="leaf"):
    t5x_format.unflatten({"a": 1, "a.b": 2})


def test_write_rejects_dotted_keys(tmp_path):
  with pytest.raises(T5xFormatError, match="without '.'"):
    t5x_format.write_t5x_checkpoint(tmp_path / "checkpoint_1",
                                    {"a.b": np.ones(2, np.float32)}, 1)
  assert not (tmp_path / "checkpoint_1").exists()


def test_bfloat16_slots_and_legacy_spec_path_are_read(tmp_path):
  """t5x v3 stores bf16 natively; tensorstore<0.1.14 specs use a top "path"."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  params = {"w": {"kernel": np.ones((2, 3), np.float32)}}
  slot = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16)
  ckpt = tmp_path / "checkpoint_3"
  t5x_format.write_t5x_checkpoint(ckpt, params, 3,
                                  param_states={"w": {"kernel": {"v": slot}}})
  zarray = json.loads(
      (ckpt / "state.param_states.w.kernel.v" / ".zarray").read_text())
  assert zarray["dtype"] == "bfloat16"
  contents = _msgpack(ckpt)
  spec = contents["optimizer"]["target"]["w"]["kernel"]
  spec["path"] = spec["kvstore"].pop("path")
  (ckpt / "checkpoint").write_bytes(
      flax.serialization.msgpack_serialize(contents))
  got = t5x_format.read_t5x_checkpoint(ckpt, include_optimizer_state=True)
  v = got.param_states["w"]["kernel"]["v"]
  assert v.dtype == np.float32
  np.testing.assert_array_equal(v, [1.5, -2.0, 3.25])
  np.testing.assert_array_equal(got.params["w"]["kernel"], np.ones((2, 3)))


# ---------------------------------------------------------------------------
# Compressors, the multi-device layout, newer layouts, slots, dtypes.


@pytest.mark.parametrize("cid", ["zstd", "blosc", "bz2", "zlib", "gzip"])
def test_every_supported_compressor_reads_bit_identical(tmp_path, cid):
  ckpt, params = _write(tmp_path, compress=cid)
  zarray = json.loads((_kernel_dir(ckpt) / ".zarray").read_text())
  assert zarray["compressor"]["id"] == cid
  got = t5x_format.flatten(t5x_format.read_t5x_checkpoint(ckpt).params)
  for k, v in t5x_format.flatten(params).items():
    np.testing.assert_array_equal(got[k].view(np.uint32), v.view(np.uint32))


def test_multi_device_layout_is_one_zstd_chunk_per_shard(tmp_path):
  ckpt, params = _write(tmp_path, compress="zstd", shards=4)
  kdir = _kernel_dir(ckpt)  # (48, 10): 10 % 4 != 0, so split 48 -> 12.
  zarray = json.loads((kdir / ".zarray").read_text())
  assert zarray["compressor"]["id"] == "zstd"
  assert zarray["chunks"] == [12, 10]
  assert sorted(p.name for p in kdir.iterdir()) == [
      ".zarray", "0.0", "1.0", "2.0", "3.0"]
  rel = json.loads((ckpt / "target.encoder.relpos_bias.rel_embedding" /
                    ".zarray").read_text())
  assert rel["chunks"] == [4, 8]  # (4, 32): the last axis is split.
  got = t5x_format.flatten(t5x_format.read_t5x_checkpoint(ckpt).params)
  for k, v in t5x_format.flatten(params).items():
    np.testing.assert_array_equal(got[k], v)


_JAX_WRITER = """
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np
from jax.experimental.array_serialization import serialization
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
out = sys.argv[1]
x = np.arange(48 * 10, dtype=np.float32).reshape(48, 10) / 7
mesh = Mesh(np.array(jax.devices()), ("model",))
arr = jax.device_put(x, NamedSharding(mesh, P("model", None)))
assert len(arr.addressable_shards) == 4
spec = serialization.get_tensorstore_spec(out)
spec["metadata"] = serialization._get_metadata(arr)
serialization.run_serialization([arr], [spec])
print(json.dumps(spec["metadata"]))
"""


def test_jax_array_serialization_layout_matches_ours(tmp_path):
  """jax itself (4 CPU devices, an array sharded 4 ways) writes the zstd,
  chunk-per-shard layout that `shards=4` writes, and it reads back."""
  import subprocess
  import sys
  jax_dir = tmp_path / "jax_written"
  run = subprocess.run([sys.executable, "-c", _JAX_WRITER, str(jax_dir)],
                       capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-2000:]
  x = np.arange(48 * 10, dtype=np.float32).reshape(48, 10) / 7
  np.testing.assert_array_equal(t5x_format.read_zarr_array(jax_dir), x)
  # t5x's own chunking would keep (48, 10) whole at its 64 MiB target.
  ckpt, _ = _write(tmp_path, compress="zstd", shards=4,
                   max_chunk_bytes=t5x_format.DEFAULT_MAX_CHUNK_BYTES)
  theirs = json.loads((jax_dir / ".zarray").read_text())
  ours = json.loads((_kernel_dir(ckpt) / ".zarray").read_text())
  assert theirs["compressor"]["id"] == "zstd"
  for key in ("chunks", "compressor", "dimension_separator", "order",
              "filters", "fill_value", "zarr_format"):
    assert ours.get(key) == theirs.get(key), key
  assert sorted(p.name for p in jax_dir.iterdir()) == sorted(
      p.name for p in _kernel_dir(ckpt).iterdir())


def test_error_unknown_compressor_names_it_and_the_supported(tmp_path):
  ckpt, _ = _write(tmp_path)
  zpath = _kernel_dir(ckpt) / ".zarray"
  meta = json.loads(zpath.read_text())
  meta["compressor"] = {"id": "lz4", "acceleration": 1}
  zpath.write_text(json.dumps(meta))
  with pytest.raises(
      T5xFormatError,
      match=r"wo\.kernel/\.zarray: chunk compressor 'lz4' is not supported; "
      r"supported: none \(raw\), blosc, bz2, gzip, zlib, zstd"):
    t5x_format.read_t5x_checkpoint(ckpt)


def test_error_spec_and_zarray_dtypes_disagree(tmp_path):
  ckpt, _ = _write(tmp_path)
  zpath = _kernel_dir(ckpt) / ".zarray"
  meta = json.loads(zpath.read_text())
  meta["dtype"] = "<i4"  # Same bytes per element: decodable, but not f32.
  zpath.write_text(json.dumps(meta))
  with pytest.raises(T5xFormatError,
                     match=r"dtype mismatch for .*wo\.kernel.*msgpack spec "
                     r"says float32 but .*\.zarray says int32"):
    t5x_format.read_t5x_checkpoint(ckpt)


def test_stored_dtypes_are_reported(tmp_path):
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  ckpt = tmp_path / "checkpoint_1"
  params = {"a": {"kernel": np.ones((2, 3), np.float32)}}
  t5x_format.write_t5x_checkpoint(ckpt, params, 1)
  got = t5x_format.read_t5x_checkpoint(ckpt)
  assert got.dtypes == {"a.kernel": "float32"}
  # A bf16 array in place of the f32 one (spec and .zarray agree).
  contents = _msgpack(ckpt)
  spec = contents["optimizer"]["target"]["a"]["kernel"]
  spec["dtype"] = "bfloat16"
  (ckpt / "checkpoint").write_bytes(
      flax.serialization.msgpack_serialize(contents))
  shutil.rmtree(ckpt / "target.a.kernel")
  ts.open({"driver": "zarr", "dtype": "bfloat16",
           "kvstore": {"driver": "file", "path": str(ckpt / "target.a.kernel")},
           "metadata": {"shape": [2, 3], "chunks": [2, 3]}},
          create=True).result().write(
              np.full((2, 3), 1.5, ml_dtypes.bfloat16)).result()
  got = t5x_format.read_t5x_checkpoint(ckpt)
  assert got.dtypes == {"a.kernel": "bfloat16"}
  assert got.params["a"]["kernel"].dtype == np.float32
  np.testing.assert_array_equal(got.params["a"]["kernel"], 1.5)


def test_slot_summary_counts_dropped_slots_without_reading_them(tmp_path):
  ckpt = tmp_path / "checkpoint_5"
  params = _params()
  slots = _slots(params)
  t5x_format.write_t5x_checkpoint(ckpt, params, 5, param_states=slots)
  want_bytes = sum(v.nbytes for v in t5x_format.flatten(slots).values())
  # Slot arrays are not touched unless asked: remove them all.
  for d in ckpt.glob("state.param_states.*"):
    shutil.rmtree(d)
  got = t5x_format.read_t5x_checkpoint(ckpt)
  assert got.param_states is None
  assert got.slots == {"tensors": len(t5x_format.flatten(slots)),
                       "bytes": want_bytes, "read": False}


def _orbax_checkpoint(path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save(path, {"target": {"w": np.ones((4, 3), np.float32)}})


def test_error_ocdbt_checkpoint_says_what_was_found(tmp_path):
  _orbax_checkpoint(tmp_path / "run" / "checkpoint_7")
  for arg in (tmp_path / "run", tmp_path / "run" / "checkpoint_7"):
    with pytest.raises(
        T5xFormatError,
        match=r"holds a checkpoint in the newer t5x/orbax OCDBT layout "
        r"\(found manifest\.ocdbt.* in .*checkpoint_7\), but this importer "
        r"reads the legacy t5x "
        r"layout \(a 'checkpoint' msgpack file and one zarr v2 folder per "
        r"array"):
      t5x_format.read_t5x_checkpoint(arg)


def test_error_teacher_checkpoint_passed_to_the_importer(tmp_path):
  _orbax_checkpoint(tmp_path / "teacher" / "params")
  (tmp_path / "teacher" / "teacher.json").write_text("{}")
  with pytest.raises(T5xFormatError,
                     match=r"OCDBT layout \(found .* in .*params\).*teacher "
                     r"checkpoint of this project already"):
    t5x_format.read_t5x_checkpoint(tmp_path / "teacher")


def test_error_zarr3_or_ocdbt_spec_in_the_msgpack(tmp_path):
  ckpt, _ = _write(tmp_path)
  contents = _msgpack(ckpt)
  spec = contents["optimizer"]["target"]["encoder"]["token_embedder"][
      "embedding"]
  spec["kvstore"] = {"driver": "ocdbt", "base": "file://" + str(ckpt),
                     "path": "target.encoder.token_embedder.embedding"}
  spec["driver"] = "zarr3"
  (ckpt / "checkpoint").write_bytes(
      flax.serialization.msgpack_serialize(contents))
  with pytest.raises(T5xFormatError,
                     match=r"'target\.encoder\.token_embedder\.embedding' is "
                     r"stored in the newer t5x/orbax layout \(TensorStore "
                     r"driver 'zarr3', kvstore 'ocdbt'"):
    t5x_format.read_t5x_checkpoint(ckpt)


def test_write_rejects_unknown_compressor(tmp_path):
  with pytest.raises(T5xFormatError, match="compress='lz4'"):
    _write(tmp_path, compress="lz4")
