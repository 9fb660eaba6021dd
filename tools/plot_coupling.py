"""Draws docs/coupling_flow.png: DD1's flow map in two dimensions.

Six codewords with teacher probabilities p; 2000 Gaussian noise vectors
integrated by `coupling.flow_map`'s steps, each path coloured by the code it
ends on; beside it, the codes' frequencies against p. The map is a
function: the same noise always lands on the same code, so a student that
receives the noise can learn which chunk the teacher writes from it.

  python tools/plot_coupling.py --out docs/coupling_flow.png
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default="docs/coupling_flow.png")
  ap.add_argument("--draws", type=int, default=2000)
  args = ap.parse_args(argv)
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from mrt_distill import atomic, coupling
  ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
  books = np.stack([np.cos(ang), np.sin(ang)], axis=1) * 1.6
  books = coupling.flow_codebooks(books[None], 1)[0]
  p = np.array([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
  log_p = jnp.log(jnp.asarray(p, jnp.float32))[None]
  z = jax.random.normal(jax.random.PRNGKey(0), (args.draws, 2))
  lp = jnp.broadcast_to(log_p, (args.draws, 6))
  codes = np.asarray(coupling.flow_map(lp, z, jnp.asarray(books)))
  path = np.asarray(coupling.flow_trajectory(lp, z, jnp.asarray(books)))
  freq = np.bincount(codes, minlength=6) / args.draws
  cmap = plt.get_cmap("tab10")
  fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(12, 4))
  for i in range(args.draws):
    a0.scatter(*z[i], s=3, color=cmap(codes[i]))
  a0.scatter(*books.T, marker="*", s=200, c=[cmap(k) for k in range(6)],
             edgecolors="k")
  a0.set_title("noise z, coloured by the code it maps to")
  for i in range(0, args.draws, 10):
    a1.plot(path[:, i, 0], path[:, i, 1], lw=0.5, color=cmap(codes[i]),
            alpha=0.6)
  a1.scatter(*books.T, marker="*", s=200, c=[cmap(k) for k in range(6)],
             edgecolors="k")
  a1.set_title(f"flow paths x_t, {coupling.FLOW_STEPS} steps")
  for a in (a0, a1):
    a.set_aspect("equal")
    a.set_xlim(-3.5, 3.5)
    a.set_ylim(-3.5, 3.5)
  x = np.arange(6)
  a2.bar(x - 0.2, p, 0.4, label="teacher p", color="0.6")
  a2.bar(x + 0.2, freq, 0.4, label="coupled sampler",
         color=[cmap(k) for k in range(6)])
  tv = 0.5 * np.abs(freq - p).sum()
  a2.set_title(f"frequencies over {args.draws} draws (TV {tv:.3f})")
  a2.set_xlabel("code")
  a2.legend()
  fig.tight_layout()
  out = pathlib.Path(args.out)
  with atomic.target(out) as tmp:
    fig.savefig(tmp, dpi=80, format="png")
  print(f"wrote {out} (TV {tv:.3f})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
