"""The first thing to run on a downloaded Magenta RT t5x checkpoint.

  python tools/check_real_teacher.py \
      /data/magenta_rt/checkpoints/llm_base_x4286_c1860k --gin base [--json]

1. Imports the checkpoint in memory (nothing is written): every tensor's
   name, shape and stored dtype is checked against the gin config, as
   `mrt-distill import-t5x` does.
2. Decodes one chunk (`--frames` frames of it; v1 sampling, CFG, a fixed
   seed) twice from the same encoder input: with the KV-cached decoder the
   distillation uses (`generate_tokens`) and with the slow full
   teacher-forced recompute per token (`reference_decode`). Reports how many
   tokens agree.
3. Feeds the cached decode's tokens back teacher-forced, once through the
   cached path (`cached_logits`) and once through the full forward, and
   reports the largest logit difference.

The encoder input is a deterministic random context of codec ids and style
ids (`--seed`); `--pad N` puts N PAD (id 0) tokens at its front, to exercise
the encoder PAD mask. Token agreement 1.0 and a logit difference within
`--tol` print OK and exit 0; anything else prints MISMATCH and exits 1. A
checkpoint that does not import stops with the importer's one-line error
(exit 1).

Cost: the recompute runs the whole model once per token (2 x 16 tokens a
frame with CFG), so keep `--frames` small on a CPU; in float32 (the default
here) the cached and recomputed logits agree to float rounding.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def encoder_inputs(geometry, seed: int, pad: int):
  """(pos, neg) int32 (1, Le): random context + style; neg = style MASK."""
  from mrt_distill.geometry import MASK_ID, PAD_ID
  g = geometry
  rng = np.random.default_rng(seed)
  ctx = rng.integers(0, g.codebook_size, (1, g.context_frames,
                                          g.context_levels))
  style = rng.integers(0, g.style_codebook_size, (1, g.style_levels))
  pos = np.concatenate([g.codec_to_ids(ctx).reshape(1, -1),
                        g.style_to_ids(style)], axis=1).astype(np.int32)
  pos[:, :pad] = PAD_ID
  neg = pos.copy()
  neg[:, -g.style_levels:] = MASK_ID
  return pos, neg


def check(src, gin: str = "base", frames: int = 1, seed: int = 0,
          pad: int = 0, dtype: str = "float32", tol: float | None = None
          ) -> dict:
  """Runs the three steps of the module docstring -> the report dict."""
  import jax
  import jax.numpy as jnp

  from mrt_distill.teacher import decode, load
  from mrt_distill.teacher.config import for_backend

  t0 = time.perf_counter()
  params, cfg, ckpt = load.read_t5x_teacher(src, gin)
  t_import = time.perf_counter() - t0
  cfg = for_backend(cfg, dtype)
  g = cfg.geometry
  if not 1 <= frames <= g.chunk_frames:
    raise ValueError(f"--frames must be in 1..{g.chunk_frames}, got {frames}")
  if not 0 <= pad < g.encoder_length:
    raise ValueError(f"--pad must be in 0..{g.encoder_length - 1}, got {pad}")
  if tol is None:
    tol = 1e-3 if cfg.activation_dtype == "float32" else 0.5
  params = jax.tree.map(jnp.asarray, params)
  pos, neg = encoder_inputs(g, seed, pad)
  sampling = decode.SamplingParams(max_decode_frames=frames)
  key = jax.random.PRNGKey(seed)

  t0 = time.perf_counter()
  cached = np.asarray(decode.generate_tokens(cfg, params, pos, neg, key,
                                             sampling))
  t_cached = time.perf_counter() - t0
  t0 = time.perf_counter()
  recomputed = decode.reference_decode(cfg, params, pos, neg, key, sampling)
  t_recompute = time.perf_counter() - t0
  n = frames * g.target_levels
  a = cached.reshape(-1)[:n]
  b = recomputed.reshape(-1)[:n]
  same = a == b
  first = int(np.argmin(same)) if not same.all() else None

  targets = cached.reshape(1, -1)
  via_cache = np.asarray(decode.cached_logits(cfg, params, pos, targets,
                                              frames))
  full = np.asarray(decode._forward_logits(  # pylint: disable=protected-access
      cfg, params, jnp.asarray(pos), jnp.asarray(targets)))[:, :n]
  diff = float(np.abs(via_cache - full).max())
  agreement = float(same.mean())
  return {
      "checkpoint": str(ckpt.path), "step": ckpt.step, "gin": gin,
      "config": cfg.name, "activation_dtype": cfg.activation_dtype,
      "tensors": len(jax.tree.leaves(params)),
      "params": int(sum(x.size for x in jax.tree.leaves(params))),
      "stored_dtypes": dict(sorted(
          {d: list(ckpt.dtypes.values()).count(d)
           for d in set(ckpt.dtypes.values())}.items())),
      "dropped_optimizer_slots": {k: ckpt.slots.get(k, 0)
                                  for k in ("tensors", "bytes")},
      "frames": frames, "tokens": n, "seed": seed, "pad": pad,
      "token_agreement": agreement,
      "first_disagreement": first,
      "max_abs_logit_diff": diff,
      "logit_scale": float(np.abs(full).max()),
      "tolerance": tol,
      "ok": bool(agreement == 1.0 and diff <= tol),
      "seconds": {"import": round(t_import, 2), "cached": round(t_cached, 2),
                  "recompute": round(t_recompute, 2)},
  }


def format_report(r: dict) -> str:
  lines = [
      f"checkpoint   {r['checkpoint']} (step {r['step']})",
      f"teacher      gin {r['gin']}: {r['tensors']} tensors, "
      f"{r['params']:,} parameters, stored {r['stored_dtypes']}; "
      f"{r['dropped_optimizer_slots']['tensors']} optimizer slot tensors "
      f"({r['dropped_optimizer_slots']['bytes']:,} bytes) not imported",
      f"decode       {r['frames']} frame(s) = {r['tokens']} tokens, "
      f"{r['activation_dtype']}, seed {r['seed']}, {r['pad']} PAD in front",
      f"tokens       cached vs recomputed agree on "
      f"{r['token_agreement']:.4f}" + (
          "" if r["first_disagreement"] is None else
          f" (first disagreement at token {r['first_disagreement']})"),
      f"logits       max |cached - full forward| = "
      f"{r['max_abs_logit_diff']:.3g} (logits up to "
      f"{r['logit_scale']:.3g}; tolerance {r['tolerance']:g})",
      f"seconds      import {r['seconds']['import']}, cached "
      f"{r['seconds']['cached']}, recompute {r['seconds']['recompute']}",
      "OK" if r["ok"] else "MISMATCH: the cached decode does not reproduce "
      "the teacher-forced model; do not distil from this teacher before "
      "finding out why",
  ]
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(
      description="Import a real Magenta RT t5x checkpoint and check the "
      "cached decode against a full teacher-forced recompute.")
  ap.add_argument("checkpoint", help="the checkpoint_<step> folder (or its "
                  "parent) of the downloaded t5x checkpoint")
  ap.add_argument("--gin", default="base", help="teacher gin: base | large "
                  "| a .gin path (default base)")
  ap.add_argument("--frames", type=int, default=1,
                  help="frames of the chunk to decode (default 1)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--pad", type=int, default=0,
                  help="PAD tokens at the front of the encoder input")
  ap.add_argument("--dtype", default="float32",
                  help="activation dtype: float32 (default), bfloat16 (v1's) "
                  "or auto")
  ap.add_argument("--tol", type=float, default=None,
                  help="largest logit difference for OK (default 1e-3 in "
                  "float32, 0.5 in bfloat16)")
  ap.add_argument("--json", action="store_true", help="print JSON")
  args = ap.parse_args(argv)

  from mrt_distill.teacher.load import TeacherLoadError
  from mrt_distill.teacher.zarr_v2 import ZarrFormatError
  try:
    report = check(args.checkpoint, args.gin, args.frames, args.seed,
                   args.pad, args.dtype, args.tol)
  except (TeacherLoadError, ZarrFormatError, ValueError) as e:
    print(f"check_real_teacher: error: {e}", file=sys.stderr)
    return 1
  print(json.dumps(report, indent=2) if args.json else format_report(report))
  return 0 if report["ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
