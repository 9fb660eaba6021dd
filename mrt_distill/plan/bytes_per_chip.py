"""Bytes one chip holds: one array (TPU tiles), one sharded array, a tree,
and the TrainState under the train step's shardings.
"""

from __future__ import annotations

import math

from mrt_distill.plan.abstract import TrainSetup


# ---- bytes per chip ----------------------------------------------------------
def _itemsize(dtype) -> int:
  import numpy as np
  return int(np.dtype(dtype).itemsize)


def array_bytes(shape, itemsize: int, tiled: bool) -> int:
  """Bytes of one array. tiled: the TPU's HBM layout, whose two minor dims
  are padded to (32 / itemsize, 128) tiles -- (16, 128) for bf16, (8, 128)
  for f32. It matters here: a (.., heads, 64) K/V array takes 2 to 2.7x
  its size (measured in the ahead-of-time compile of the teacher decode)."""
  dims = [int(x) for x in shape]
  if tiled and dims:
    dims[-1] = -(-dims[-1] // 128) * 128
    if len(dims) > 1:
      sub = 32 // itemsize
      dims[-2] = -(-dims[-2] // sub) * sub
  return math.prod(dims) * itemsize


def shard_bytes(shape, dtype, mesh_spec, mesh_shape: dict[str, int]) -> int:
  """Bytes one chip holds of an array laid out by a mesh PartitionSpec:
  each dim split over the product of its mesh axes, rounded up (XLA pads
  uneven shards)."""
  spec = tuple(mesh_spec) + (None,) * (len(shape) - len(tuple(mesh_spec)))
  local = []
  for dim, entry in zip(shape, spec):
    names = () if entry is None else (
        (entry,) if isinstance(entry, str) else tuple(entry))
    ways = math.prod(mesh_shape[n] for n in names)
    local.append(-(-int(dim) // ways))
  return array_bytes(local, _itemsize(dtype), tiled=False)


def tree_bytes(tree) -> int:
  import jax
  return sum(math.prod(x.shape) * _itemsize(x.dtype)
             for x in jax.tree.leaves(tree))


def state_bytes_per_chip(setup: TrainSetup, mesh_shape: dict[str, int]
                         ) -> dict[str, int]:
  """{frozen, trainable, optimizer} per chip, with the shardings
  `train_step.state_shardings` gives the real state (an abstract mesh)."""
  import jax
  from jax.sharding import AbstractMesh

  from mrt_distill import axes
  from mrt_distill.distill import train_step as T
  mesh = AbstractMesh(tuple(mesh_shape[a] for a in axes.MESH_AXES),
                      axes.MESH_AXES)
  t_sh = T.param_shardings(setup.trainable_specs, mesh)
  f_sh = T.param_shardings(setup.frozen_specs, mesh)
  sh = T.state_shardings(setup.state, t_sh, f_sh, mesh)

  def per_chip(values, shardings):
    return sum(shard_bytes(v.shape, v.dtype, s.spec, mesh_shape)
               for v, s in zip(jax.tree.leaves(values),
                               jax.tree.leaves(shardings)))

  return {"frozen": per_chip(setup.state.frozen, sh.frozen),
          "trainable": per_chip(setup.state.params, sh.params),
          "optimizer": per_chip(setup.state.opt_state, sh.opt_state)
          + per_chip(setup.state.step, sh.step)}
