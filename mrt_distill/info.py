"""What `mrt-distill info` prints: versions, devices, geometry, teacher sizes."""

from __future__ import annotations

import importlib.metadata as md
import platform

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
             "ml-collections", "gin-config", "numpy", "tensorstore")


def _version(pkg: str) -> str:
  try:
    return md.version(pkg)
  except md.PackageNotFoundError:
    return "not installed"


def collect(gin: str = "base") -> dict:
  import jax

  import mrt_distill
  from mrt_distill.geometry import MRT_V1
  from mrt_distill.teacher.load import load_teacher_config
  from mrt_distill.teacher.model import abstract_params, count_params

  cfg = load_teacher_config(gin)
  shapes, _ = abstract_params(cfg)
  parts = {k: count_params(v) for k, v in shapes.items()}
  dec = shapes["decoder"]
  return {
      "mrt_distill": mrt_distill.__version__,
      "python": platform.python_version(),
      "packages": {p: _version(p) for p in _PACKAGES},
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "process_count": jax.process_count(),
      "default_geometry": MRT_V1.describe(),
      "teacher": {
          "gin": gin,
          "params": count_params(shapes),
          "tensors": len(jax.tree.leaves(shapes)),
          "encoder": parts["encoder"],
          "temporal_stack": count_params(dec["decoder"]["temporal_decoder"]),
          "depth_stack": count_params(dec["decoder"]["depth_decoder"]),
          "token_embedding": parts["token_embedder"],
          "logits_projection": count_params(dec["logits_dense"]),
      },
  }


def format_report(r: dict) -> str:
  g = r["default_geometry"]
  t = r["teacher"]
  lines = [
      f"mrt_distill {r['mrt_distill']} (python {r['python']})",
      "packages: " + ", ".join(f"{k} {v}" for k, v in r["packages"].items()),
      f"backend: {r['backend']}  devices: {len(r['devices'])} "
      f"({r['devices'][0]}{', ...' if len(r['devices']) > 1 else ''})  "
      f"processes: {r['process_count']}",
      f"default geometry {g['name']}: {g['sample_rate']} Hz x {g['channels']} "
      f"ch, {g['frame_rate']} Hz frames, chunk {g['chunk_frames']} frames, "
      f"context {g['context_frames']} frames x {g['context_levels']} levels, "
      f"{g['target_levels']} levels generated, codebook {g['codebook_size']}, "
      f"{g['style_levels']} style tokens; encoder {g['encoder_length']} / "
      f"decoder {g['decoder_length']} tokens, vocab {g['vocab_size']} "
      f"(pretrained {g['vocab_size_pretrained']}, rows "
      f"{g['padded_vocab_size']})",
      f"teacher {t['gin']}: {t['params']:,} parameters in {t['tensors']} "
      f"tensors (encoder {t['encoder'] / 1e6:.2f} M, temporal "
      f"{t['temporal_stack'] / 1e6:.2f} M, depth {t['depth_stack'] / 1e6:.2f} "
      f"M, embedding {t['token_embedding'] / 1e6:.2f} M, logits "
      f"{t['logits_projection'] / 1e6:.2f} M)",
  ]
  return "\n".join(lines)


# ---- memory of this process (benchmarks, eval, load tests) --------------------
def peak_rss_mib() -> float:
  """This process's peak resident set so far, MiB (ru_maxrss: KiB on Linux,
  bytes on macOS)."""
  import resource
  import sys
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def rss_mib() -> float:
  """This process's resident set now, MiB (/proc); the peak where /proc is
  missing."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return peak_rss_mib()
