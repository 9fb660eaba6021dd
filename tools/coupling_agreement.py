"""Coupling agreement: how often the student's coupled pick equals the
teacher's, and how often any coupling could make it.

The coupled student plays teacher(z) only where its pick for a token equals
the teacher's. For every token of held-out teacher chunks (the prompts and
contexts of tools/paired_fidelity.py), p is the teacher's distribution and
q the student's teacher-forced one (reading the teacher's codes before it,
guided and tempered as served). Over fresh noise draws, the share of draws
on which p and q pick the same code:

  flow     the DD1 flow map with shared noise z (mrt_distill/coupling.py):
           the coupling the teacher and the student use,
  gumbel   Gumbel-max with shared Gumbel noise (Gumbel Distillation,
           arXiv 2603.22216), the alternative the issue names,
  maximal  1 - TV(p, q): the most any coupling of p and q can give.

If `maximal` is low, no choice of coupling makes the student follow the
teacher token for token: its distributions must come closer first.

  python tools/coupling_agreement.py --student reference --chunks 2 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

LEVEL_KEYS = ("flow", "gumbel", "maximal")


def agreement(logp_NxV, logq_NxV, books_VxD, key, draws: int) -> dict:
  """Agreement of p and q (rows of log-probabilities over one level's V
  codes) -> {"flow", "gumbel", "maximal"}: each a scalar, the mean over
  rows (and `draws` shared-noise draws) of P(pick under p == pick under
  q)."""
  from mrt_distill import coupling
  n, v = logp_NxV.shape
  logp = jnp.asarray(logp_NxV, jnp.float32)
  logq = jnp.asarray(logq_NxV, jnp.float32)
  books = jnp.asarray(books_VxD, jnp.float32)
  k_z, k_g = jax.random.split(key)
  z = jax.random.normal(k_z, (draws * n, books.shape[-1]))
  rep = lambda a: jnp.broadcast_to(a[None], (draws, n, v)).reshape(-1, v)
  flow = jnp.mean(coupling.flow_map(rep(logp), z, books)
                  == coupling.flow_map(rep(logq), z, books))
  gum = jax.random.gumbel(k_g, (draws, n, v))
  gumbel = jnp.mean(jnp.argmax(logp[None] + gum, -1)
                    == jnp.argmax(logq[None] + gum, -1))
  return {"flow": flow, "gumbel": gumbel,
          "maximal": jnp.mean(maximal_agreement(logp, logq))}


def maximal_agreement(logp_xV, logq_xV):
  """1 - TV(p, q) per row (any leading shape): the most often any coupling
  can make p and q pick the same code."""
  return 1.0 - 0.5 * jnp.sum(jnp.abs(jnp.exp(logp_xV) - jnp.exp(logq_xV)),
                             axis=-1)


def measure(student: str, chunks: int, draws: int, seed: int,
            log=print) -> dict:
  from mrt_distill import coupling
  from mrt_distill.distill import student as S
  from mrt_distill.serve.bundle import load_student
  import paired_fidelity as pf

  t0 = time.perf_counter()
  sb = load_student(student)
  if not sb.model.cfg.token_head:
    raise SystemExit(f"error: student {student!r} has no token head "
                     f"(student.token_head=False): it picks no codes")
  player = pf.Player(sb)
  system = sb.teacher_system(**sb.config.sampling.to_dict())
  g, books = system.geometry, sb.model.books.flow
  names, emb, style_ids = pf.held_out_styles(sb)
  b = len(names)
  ctx = np.full((b, g.context_frames, g.target_levels), -1, np.int32)
  fn = jax.jit(agreement, static_argnums=(4,))
  per = {k: [] for k in LEVEL_KEYS}
  by_frame = []  # (C, K) per chunk: 1 - TV by position in the chunk
  for i in range(chunks):
    key = jax.random.PRNGKey(seed * 7919 + i)
    z = np.asarray(coupling.draw_noise(jax.random.fold_in(key, 0), g, b))
    t_z, logp = system.sample_codes(ctx, emb, noise=z, with_log_probs=True)
    logq = player.forced_log_probs(S.context_ids(g, ctx), style_ids, emb, z,
                                   t_z)
    rows = [fn(logp[:, :, q].reshape(-1, g.codebook_size),
               logq[:, :, q].reshape(-1, g.codebook_size), books[q],
               jax.random.fold_in(key, 10 + q), draws)
            for q in range(g.target_levels)]
    for k in LEVEL_KEYS:
      per[k].append([float(r[k]) for r in rows])
    by_frame.append(np.asarray(maximal_agreement(
        jnp.asarray(logp), jnp.asarray(logq))).mean(axis=0))
    ctx = np.concatenate([ctx, t_z], axis=1)[:, -g.context_frames:]
    log(f"chunk {i + 1}/{chunks} ({time.perf_counter() - t0:.0f} s)",
        file=sys.stderr)
  return {"student": student, "chunks": chunks, "draws": draws, "seed": seed,
          "prompts": names, "sampling": sb.config.sampling.to_dict(),
          "agreement_per_level": {k: [round(a, 4) for a in np.mean(v, 0)]
                                  for k, v in per.items()},
          # Does the student fit the teacher less well later in the chunk
          # (its picks read its own earlier ones) or from the first frame?
          "maximal_by_frame_per_level": np.round(
              np.mean(by_frame, axis=0), 4).tolist(),
          "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--student", default="reference",
                  help="a token-head student: 'reference', a workdir (with "
                       "@STEP) or a .npz")
  ap.add_argument("--chunks", type=int, default=2,
                  help="teacher chunks per prompt (contexts advance with "
                       "the teacher's)")
  ap.add_argument("--draws", type=int, default=32,
                  help="shared-noise draws per token")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--json", action="store_true")
  args = ap.parse_args(argv)
  if not 1 <= args.chunks <= 64:
    ap.error(f"--chunks {args.chunks}: give 1..64")
  if not 1 <= args.draws <= 1024:
    ap.error(f"--draws {args.draws}: give 1..1024")
  from mrt_distill.serve.student_files import StudentLoadError
  try:
    res = measure(args.student, args.chunks, args.draws, args.seed)
  except StudentLoadError as e:  # missing, damaged or of another geometry
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.json:
    print(json.dumps(res, indent=2))
  else:
    for k, v in res["agreement_per_level"].items():
      print(f"{k:8s} picks equal, per level: "
            + " / ".join(f"{a:.3f}" for a in v))
    frames = np.asarray(res["maximal_by_frame_per_level"])
    print("maximal by frame (mean over levels): "
          + " ".join(f"{a:.2f}" for a in frames.mean(axis=1)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
