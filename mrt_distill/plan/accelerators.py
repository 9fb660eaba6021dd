"""The TPU slice catalogue: chip counts, hosts, topology and HBM per chip.

Stdlib only: tools/tpu/tpu.py uses it on machines that only have gcloud.
"""

from __future__ import annotations

import dataclasses
import math
import re

GIB = 2**30

# ---- the slice catalogue -----------------------------------------------------
# HBM per chip: v5e 16 GiB (HBM2), v6e 32 GiB (Cloud TPU docs, "TPU v5e" and
# "TPU v6e" system architecture pages).
HBM_GIB = {"v5e": 16, "v6e": 32}
# gcloud accelerator-type prefixes.
TYPE_PREFIX = {"v5e": "v5litepod", "v6e": "v6e"}
# Slice sizes offered for both (2-D tori, no custom topologies).
SLICE_TOPOLOGY = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8",
                  64: "8x8", 128: "8x16", 256: "16x16"}
# Single-host slices have up to 8 chips; multi-host slices have 4 per host.
MAX_SINGLE_HOST = 8
CHIPS_PER_HOST_MULTI = 4


class UnknownAcceleratorError(ValueError):
  """An accelerator type outside the catalogue."""


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """One Cloud TPU slice type (v5e or v6e)."""
  generation: str  # "v5e" | "v6e"
  chips: int

  @property
  def name(self) -> str:
    """The gcloud --accelerator-type, e.g. v5litepod-16, v6e-64."""
    return f"{TYPE_PREFIX[self.generation]}-{self.chips}"

  @property
  def hosts(self) -> int:
    if self.chips <= MAX_SINGLE_HOST:
      return 1
    return self.chips // CHIPS_PER_HOST_MULTI

  @property
  def chips_per_host(self) -> int:
    return self.chips // self.hosts

  @property
  def topology(self) -> str:
    return SLICE_TOPOLOGY[self.chips]

  @property
  def hbm_bytes(self) -> int:
    return HBM_GIB[self.generation] * GIB


def supported_accelerators() -> list[str]:
  return [Accelerator(g, n).name for g in TYPE_PREFIX for n in SLICE_TOPOLOGY]


def accelerator(name: str) -> Accelerator:
  """'v5litepod-16' | 'v5e-16' | 'v6e-64' -> Accelerator.

  Raises:
    UnknownAcceleratorError: naming every supported type.
  """
  m = re.fullmatch(r"(v5litepod|v5e|v6e)-(\d+)", str(name).strip())
  chips = int(m.group(2)) if m else None
  if m is None or chips not in SLICE_TOPOLOGY:
    raise UnknownAcceleratorError(
        f"unknown TPU accelerator type {name!r}; supported: "
        f"{', '.join(supported_accelerators())} (v5e is spelled v5litepod-N "
        f"by gcloud; v5e-N is accepted here)")
  gen = "v6e" if m.group(1) == "v6e" else "v5e"
  return Accelerator(gen, chips)


def accelerator_for_config(config) -> Accelerator:
  """The slice a pod config targets: the generation named in config.name
  (`..._v5e...` / `..._v6e...`) and prod(mesh_shape) chips.

  Raises:
    UnknownAcceleratorError: the name names no generation, or the mesh is
      not a slice size; pass the type explicitly then.
  """
  m = re.search(r"v5e|v6e", str(config.name))
  chips = int(math.prod(int(x) for x in config.mesh_shape))
  if m is None or chips not in SLICE_TOPOLOGY:
    raise UnknownAcceleratorError(
        f"config {config.name!r} (mesh {tuple(config.mesh_shape)}) names no "
        f"TPU slice; pass one explicitly (--tpu), e.g. v5litepod-16")
  return Accelerator(m.group(0), chips)
