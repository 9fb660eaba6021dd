"""Checked .npz weight files of the reference style model and the judges, and
the flat <-> nested parameter-tree conversions they use."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mrt_distill import checksummed


# ---- checked .npz assets (shared with the judges) ----------------------------
# Weights go through the project's checksummed format: X.npz plus X.npz.json
# (meta + sha256), written deterministically so that the same weights give
# the same bytes.
AssetError = checksummed.ChecksumError  # A ValueError; names the rebuild.


def save_asset(path, arrays: dict, meta: dict) -> pathlib.Path:
  """Write arrays to `path` (.npz) and `meta` + sha256 to its sidecar."""
  path = pathlib.Path(path)
  if path.suffix != ".npz":
    raise ValueError(f"weights path {path} must end in .npz")
  return checksummed.save_npz(path, arrays, meta)


def load_asset(path, fmt: str, rebuild: str
               ) -> tuple[dict[str, np.ndarray], dict]:
  """Read and verify a file written by `save_asset` of format `fmt`.

  Raises:
    AssetError: missing file or sidecar, checksum mismatch, or another
      format; the message says how to rebuild (`rebuild`).
  """
  arrays, meta = checksummed.load_npz(path, rebuild)
  if meta.get("format") != fmt:
    raise AssetError(
        f"{path} holds {meta.get('format')!r}, not {fmt!r}; rebuild it with "
        f"`{rebuild}`")
  return arrays, meta


def flatten_params(params, prefix: str = "params/") -> dict[str, np.ndarray]:
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  return {prefix + k: np.asarray(v) for k, v in flat.items()}


def unflatten_params(arrays: dict, prefix: str = "params/") -> dict:
  flat = {k[len(prefix):]: jnp.asarray(v) for k, v in arrays.items()
          if k.startswith(prefix)}
  return traverse_util.unflatten_dict(flat, sep="/")


def check_param_shapes(params, expected, what: str, rebuild: str) -> dict:
  """Return `params` with 0-d leaves restored; AssetError naming missing,
  extra and mis-shaped parameters.

  `checksummed.save_npz` stores 0-d arrays (the temperature) as shape (1,)
  (np.ascontiguousarray promotes them), so those are reshaped back.
  """
  have = traverse_util.flatten_dict(params, sep="/")
  want = traverse_util.flatten_dict(expected, sep="/")
  for k in set(have) & set(want):
    if want[k].shape == () and np.shape(have[k]) == (1,):
      have[k] = jnp.reshape(have[k], ())
  problems = [f"missing {k}" for k in sorted(set(want) - set(have))]
  problems += [f"unexpected {k}" for k in sorted(set(have) - set(want))]
  problems += [f"{k}: {tuple(np.shape(have[k]))} != {tuple(want[k].shape)}"
               for k in sorted(set(want) & set(have))
               if tuple(np.shape(have[k])) != tuple(want[k].shape)]
  if problems:
    raise AssetError(f"{what} does not match its config: "
                     + "; ".join(problems[:8]) + f"; rebuild with `{rebuild}`")
  return traverse_util.unflatten_dict(have, sep="/")
