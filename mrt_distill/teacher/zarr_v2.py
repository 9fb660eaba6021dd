"""A minimal zarr v2 array reader (numpy + gzip/zlib), as t5x writes arrays.

Written for the legacy t5x checkpoint format (`t5x_format.py`): unlike
TensorStore, a missing chunk is an error when the array has no fill value,
instead of silently reading zeros, and every error names the file at fault.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pathlib
import zlib
from typing import Any

import numpy as np

PathLike = str | os.PathLike


class ZarrFormatError(ValueError):
  """A zarr array directory is missing, incomplete or corrupt."""

def _decode_dtype(code: Any, zarray: pathlib.Path) -> tuple[np.dtype, bool]:
  """Returns (storage dtype, is_bfloat16) for a zarr v2 dtype string."""
  if code == "bfloat16":  # TensorStore's zarr extension.
    return np.dtype("<u2"), True
  try:
    dt = np.dtype(code)
  except TypeError as e:
    raise ZarrFormatError(
        f"{zarray}: unsupported zarr dtype {code!r}.") from e
  if dt.kind not in "fiub" or dt.fields is not None:
    raise ZarrFormatError(f"{zarray}: unsupported zarr dtype {code!r}.")
  return dt, False


def _read_zarray(array_dir: pathlib.Path) -> dict[str, Any]:
  zarray = array_dir / ".zarray"
  if not array_dir.is_dir():
    raise ZarrFormatError(
        f"Array directory {array_dir} is referenced by "
        f"the checkpoint in {array_dir.parent} but does not exist. The "
        "checkpoint is incomplete; re-download or re-copy the whole "
        "checkpoint directory.")
  if not zarray.is_file():
    raise ZarrFormatError(
        f"{zarray} is missing: {array_dir} is not a zarr array. The "
        "checkpoint is incomplete; re-download it.")
  try:
    meta = json.loads(zarray.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ZarrFormatError(
        f"{zarray} is not valid JSON ({e}); the file is corrupt. Re-download "
        "the checkpoint.") from e
  if not isinstance(meta, dict):
    raise ZarrFormatError(f"{zarray} is corrupt: expected a JSON object.")
  missing = [k for k in ("shape", "chunks", "dtype") if k not in meta]
  if missing:
    raise ZarrFormatError(
        f"{zarray} is corrupt: missing keys {missing}. Re-download the "
        "checkpoint.")
  if meta.get("zarr_format", 2) != 2:
    raise ZarrFormatError(
        f"{zarray}: zarr_format {meta.get('zarr_format')!r} is not supported "
        "(t5x writes zarr v2).")
  shape, chunks = meta["shape"], meta["chunks"]
  if (not isinstance(shape, list) or not isinstance(chunks, list) or
      len(shape) != len(chunks) or
      not all(isinstance(n, int) and n >= 0 for n in shape) or
      not all(isinstance(c, int) and c >= 1 for c in chunks)):
    raise ZarrFormatError(
        f"{zarray} is corrupt: shape {shape!r} / chunks {chunks!r} are not "
        "matching lists of non-negative / positive ints.")
  if meta.get("filters"):
    raise ZarrFormatError(
        f"{zarray}: zarr filters {meta['filters']!r} are not supported "
        "(t5x writes none).")
  if meta.get("order", "C") not in ("C", "F"):
    raise ZarrFormatError(f"{zarray}: bad order {meta.get('order')!r}.")
  return meta


def _decompress(raw: bytes, compressor: Any, chunk_path: pathlib.Path) -> bytes:
  if compressor is None:
    return raw
  cid = compressor.get("id") if isinstance(compressor, dict) else None
  try:
    if cid == "gzip":
      return gzip.decompress(raw)
    if cid == "zlib":
      return zlib.decompress(raw)
  except (OSError, EOFError, zlib.error) as e:
    raise ZarrFormatError(
        f"Chunk {chunk_path} does not decompress with {cid}: {e}. The file "
        "is corrupt; re-download the checkpoint.") from e
  raise ZarrFormatError(
      f"{chunk_path.parent / '.zarray'}: compressor {compressor!r} is not "
      "supported (t5x writes gzip or none).")


def read_zarr_array(array_dir: PathLike) -> np.ndarray:
  """Reads a zarr v2 array directory (as written by t5x) into numpy.

  Supports gzip, zlib or no compression, C/F order, '.' or '/' dimension
  separators, numeric dtypes and TensorStore's `bfloat16` (returned as
  float32). Unlike TensorStore, a missing chunk is an error when the array
  has no fill value (t5x's default), instead of silently reading zeros.

  Args:
    array_dir: Directory holding `.zarray` and the chunk files.

  Returns:
    The array.

  Raises:
    ZarrFormatError: On a missing directory/`.zarray`/chunk or corrupt data.
  """
  array_dir = pathlib.Path(array_dir)
  meta = _read_zarray(array_dir)
  zarray = array_dir / ".zarray"
  shape, chunks = tuple(meta["shape"]), tuple(meta["chunks"])
  dtype, is_bf16 = _decode_dtype(meta["dtype"], zarray)
  order = meta.get("order", "C")
  sep = meta.get("dimension_separator", ".") or "."
  fill = meta.get("fill_value")
  if isinstance(fill, str):  # zarr v2 spells non-finite floats as strings.
    fill = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}.get(
        fill, fill)
  if is_bf16 and fill is not None:  # Stored as the high half of a float32.
    fill = int(np.array(fill, np.float32).view(np.uint32)) >> 16
  out = np.empty(shape, dtype=dtype)
  chunk_elems = math.prod(chunks)
  grid = [math.ceil(n / c) for n, c in zip(shape, chunks)]
  for idx in np.ndindex(*grid):
    key = sep.join(str(i) for i in idx) if idx else "0"
    chunk_path = array_dir / key
    region = tuple(slice(i * c, min((i + 1) * c, n))
                   for i, c, n in zip(idx, chunks, shape))
    if not chunk_path.is_file():
      if fill is None:
        raise ZarrFormatError(
            f"Chunk file {chunk_path} is missing (array shape {shape}, "
            f"chunks {chunks}, expected {math.prod(grid)} chunk files). The "
            "checkpoint is incomplete; re-download or re-copy it.")
      out[region] = fill  # zarr semantics: absent chunk == fill_value.
      continue
    data = _decompress(chunk_path.read_bytes(), meta.get("compressor"),
                       chunk_path)
    if len(data) != chunk_elems * dtype.itemsize:
      raise ZarrFormatError(
          f"Shape mismatch in {chunk_path}: {len(data)} bytes of data but "
          f"{zarray} declares chunks {chunks} of {meta['dtype']} "
          f"({chunk_elems * dtype.itemsize} bytes). The chunk or .zarray is "
          "corrupt; re-download the checkpoint.")
    block = np.frombuffer(data, dtype=dtype).reshape(chunks, order=order)
    out[region] = block[tuple(slice(0, r.stop - r.start) for r in region)]
  if is_bf16:
    out = (out.astype(np.uint32) << 16).view(np.float32)
  return out.astype(out.dtype.newbyteorder("="), copy=False)
