"""Weight files that say when they are damaged: one `.npz` + a JSON sidecar.

`save_npz(path, arrays, meta)` writes `path` (arrays, optionally stored as
float16 to keep shipped weights small) and `path + ".json"` holding `meta`,
each array's dtype/shape and the file's sha256. `load_npz` recomputes the
hash and refuses a file that does not match, naming the file and the command
that rebuilds it, instead of loading corrupted weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import zipfile
from typing import Any, Mapping

import numpy as np

from mrt_distill import atomic


class ChecksumError(ValueError):
  """A weights file is missing, unreadable, or does not match its checksum."""


class MissingAssetError(FileNotFoundError):
  """A weights file (an asset) has not been built or downloaded; the
  message names the command or the source that gives it."""


def sidecar(path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  return path.with_name(path.name + ".json")


def sha256_file(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
             meta: Mapping[str, Any] | None = None,
             float_dtype=None) -> pathlib.Path:
  """Writes arrays (floats cast to `float_dtype` if given) + sidecar JSON."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  stored = {}
  for k, v in arrays.items():
    v = np.asarray(v)
    if float_dtype is not None and np.issubdtype(v.dtype, np.floating):
      v = v.astype(float_dtype)
    stored[k] = v
  with atomic.target(path) as tmp:  # never a half-written weights file
    _write_deterministic_npz(tmp, stored)
  info = {"meta": dict(meta or {}), "sha256": sha256_file(path),
          "arrays": {k: {"dtype": str(v.dtype), "shape": list(v.shape)}
                     for k, v in stored.items()}}
  atomic.write_text(sidecar(path), json.dumps(info, indent=2, sort_keys=True))
  return path


def _write_deterministic_npz(path: pathlib.Path, arrays: Mapping[str, np.ndarray]):
  """Like np.savez_compressed, but with fixed zip timestamps and member order,
  so identical weights give byte-identical files (and the same sha256)."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    for name in sorted(arrays):
      buf = io.BytesIO()
      np.lib.format.write_array(buf, np.asarray(arrays[name], order="C"),
                                allow_pickle=False)
      info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      zf.writestr(info, buf.getvalue())


# The command that restores a missing or damaged reference-world weights
# file: it builds every stage into the build folder (resuming a build there)
# and copies the weights into the package. A stage alone (`--stage NAME`)
# writes only to the build folder, so it is not the fix.
REFERENCE_REBUILD = "python tools/build_reference_world.py --install"


def load_npz(path: str | os.PathLike, rebuild_hint: str,
             as_float32: bool = True) -> tuple[dict, dict]:
  """-> (arrays, meta). Verifies the sha256 recorded next to the file."""
  path = pathlib.Path(path)
  side = sidecar(path)
  how = f"rebuild it with `{rebuild_hint}`"
  if not path.exists():
    raise ChecksumError(f"weights file {path} is missing; {how}")
  if not side.exists():
    raise ChecksumError(f"{side} (checksum and metadata of {path.name}) is "
                        f"missing; {how}")
  try:
    info = json.loads(side.read_text())
  except json.JSONDecodeError as e:
    raise ChecksumError(f"{side} is not valid JSON ({e}); {how}") from None
  digest = sha256_file(path)
  if digest != info.get("sha256"):
    raise ChecksumError(
        f"weights file {path} is corrupted: sha256 {digest[:12]}... does not "
        f"match the recorded {str(info.get('sha256'))[:12]}...; {how}")
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  if as_float32:
    arrays = {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating)
              else v for k, v in arrays.items()}
  return arrays, info.get("meta", {})
