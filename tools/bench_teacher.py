"""Benchmark: teacher chunk decode speed on this machine.

  python tools/bench_teacher.py --json            # tiny, reference, base; random weights
  python tools/bench_teacher.py --configs tiny --chunks 5

Prints one JSON object (with --json) holding, per config: params,
ms_per_chunk, sequential_calls_per_chunk, tokens_per_s, rtf, FLOPs per chunk
and the achieved fraction of a matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill.teacher import cost, decode, load, model
from mrt_distill.teacher.system import build_encoder_inputs


def matmul_peak(dtype=jnp.float32, n: int = 2048, reps: int = 5) -> float:
  """Best-of-reps FLOP/s of an n x n x n matmul."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(reps))
  return 2 * n**3 / best


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def bench_config(gin: str, chunks: int, activation_dtype: str | None,
                 peak: float) -> dict:
  cfg = load.load_teacher_config(gin)
  if activation_dtype:
    cfg = cfg.replace(activation_dtype=activation_dtype)
  g = cfg.geometry
  params = model.init_params(cfg, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  ctx = rng.integers(0, g.codebook_size, (1, g.context_frames, g.target_levels))
  style = g.style_to_ids(rng.integers(0, g.style_codebook_size,
                                      (1, g.style_levels)))
  pos = build_encoder_inputs(g, ctx, style)
  neg = build_encoder_inputs(g, ctx, None)
  sp = decode.SamplingParams()  # v1 defaults: w 5, temperature 1.1, top-k 40
  run = lambda i: decode.generate_tokens(cfg, params, pos, neg,
                                         jax.random.PRNGKey(i), sp
                                         ).block_until_ready()
  compile_s = _timed(lambda: run(0))
  times = [_timed(lambda: run(i + 1)) for i in range(chunks)]
  sec = float(np.median(times))
  flops = cost.chunk_flops(cfg, rows=2)
  return {
      "config": gin + (f"/{activation_dtype}" if activation_dtype else ""),
      "activation_dtype": cfg.activation_dtype,
      "params": model.count_params(params),
      "geometry": g.name,
      "cfg_rows": 2,
      "chunks_timed": chunks,
      "compile_s": round(compile_s, 2),
      "ms_per_chunk": round(sec * 1e3, 2),
      "sequential_calls_per_chunk": cost.sequential_calls(cfg)["decoder_steps"],
      "sequential_calls": cost.sequential_calls(cfg),
      "tokens_per_s": round(g.decoder_length / sec, 1),
      "rtf": round(g.chunk_seconds / sec, 4),
      "gflop_per_chunk": round(flops["total"] / 1e9, 3),
      "gflop_breakdown": {k: round(v / 1e9, 3) for k, v in flops.items()},
      "achieved_gflop_s": round(flops["total"] / sec / 1e9, 2),
      "fraction_of_matmul_peak": round(flops["total"] / sec / peak, 4),
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--configs", default="tiny,reference,base",
                 help="comma-separated gin configs; NAME/float32 overrides the "
                      "activation dtype")
  p.add_argument("--chunks", type=int, default=2, help="timed chunks each")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  peak = matmul_peak()
  out = {"device": str(jax.devices()[0]), "backend": jax.default_backend(),
         "machine": platform.machine(), "jax": jax.__version__,
         "matmul_peak_gflop_s_f32": round(peak / 1e9, 1), "results": []}
  for spec in args.configs.split(","):
    gin, _, dt = spec.partition("/")
    r = bench_config(gin, args.chunks, dt or None, peak)
    out["results"].append(r)
    if not args.json:
      print(f"{r['config']:>14}: {r['params']:>12,} params  "
            f"{r['ms_per_chunk']:>10.1f} ms/chunk  RTF {r['rtf']:.4f}  "
            f"{r['tokens_per_s']:.0f} tok/s  "
            f"{r['fraction_of_matmul_peak']:.2%} of matmul peak",
            file=sys.stderr)
  if args.json:
    print(json.dumps(out, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
