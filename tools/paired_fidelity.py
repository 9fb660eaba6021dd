"""Paired fidelity: does the coupled student write the teacher's chunk for
the teacher's noise?

For held-out prompts (the bare style names) the teacher streams with
coupled sampling; at every chunk, for the same context and style:

  T(z)   the teacher's chunk from noise z (the target),
  T(z')  the teacher's chunk from independent noise z' (how far apart two
         valid chunks are: the floor of any student that ignores z),
  S(z)   the coupled student's chunk from the same z (as served: its
         guidance weight, one step),
  U      an uncoupled student's chunk (its own noise), side by side,
  F(z)   (token heads) the chunk of the coupled student's teacher-forced
         picks: each token reads the teacher's codes before it. Its
         distance is where the student would be if it never left the
         teacher's path; the gap from F(z) to S(z) is what its own slips
         cost when it plays.
  T~(z)  (token heads) the teacher's own chunk with the noise redrawn (from
         z') at the tokens where F(z) differs from T(z): a student that
         slips where this one does, but after every slip goes on exactly as
         the teacher would (perfect recovery). Its distance is the floor of
         any student with this per-token accuracy, however it is trained
         to recover; the gap from S(z) down to it is what recovery could
         still buy. `--slip-rates` adds the same at uniform random rates.

Distances to T(z): latent MSE in the student's scaled space and the mean
absolute log-mel difference (dB) of the codec-decoded audio. The ratio
d(S(z), T(z)) / d(T(z'), T(z)) is what coupling buys: 1 = no better than
an independent sample; the issue's target is <= 0.6.

  python tools/paired_fidelity.py --student reference \
      --uncoupled runs/uncoupled/student.npz --json --png docs/coupled.png

Prints one JSON object (--json) or a table; --png draws, for three styles,
4 s of teacher(z) / coupled student(z) / uncoupled student / teacher(z')
spectrograms stacked (same contexts, same noise).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

STYLES_PNG = ("techno", "jazz_piano_trio", "funk")


def _log_mel_db(audio_BxS, sr: int) -> np.ndarray:
  from mrt_distill.distill import losses as L
  mel = L.mel_power(jnp.asarray(audio_BxS), sr, 512, 128, 64)
  return np.asarray(10.0 * jnp.log10(jnp.maximum(mel, 1e-8)))


class Player:
  """One student's chunk for given contexts, styles and (coupled) noise."""

  def __init__(self, bundle, cfg_weight: float | None = None,
               token_temperature: float = 1.0):
    from mrt_distill.serve.chunk_step import ChunkStepper
    self.b = bundle
    self.stepper = ChunkStepper(bundle.model, bundle.codec,
                                bundle.style_model, bundle.scaler)
    self.w = (float(bundle.config.student.get("cfg_weight", 0.0))
              if cfg_weight is None else float(cfg_weight))
    self.coupled = bundle.model.cfg.coupled
    # The serving control: x the student's own pick_temperature.
    self.token_temperature = float(token_temperature)
    self._fn = jax.jit(self._latents)
    # Traced on first use only.
    self._forced_fn = jax.jit(self._forced)
    self._forced_logp_fn = jax.jit(self._forced_log_probs)

  def _latents(self, params, ctx_ids, style_ids, emb, z, key):
    """The serving step's sampler (one step, its guidance, pick temperature
    and seam) for this window, with the teacher's z for a coupled
    student."""
    from mrt_distill.serve.chunk_step import controls
    x0 = self.stepper.sample_window(
        params, ctx_ids, style_ids, emb,
        controls(emb, self.w, 1, token_temperature=self.token_temperature),
        key, z if self.coupled else None)
    return self.b.scaler.to_codec(x0)

  def _forced_log_probs(self, params, ctx_ids, style_ids, emb, z, t_codes):
    """Teacher-forced distributions: every token's logits read the teacher's
    codes before it (as in training), guided and tempered as served ->
    log q (B, C, K, V), what the student's pick maps with z."""
    from mrt_distill.distill import student as S
    from mrt_distill.geometry import MASK_ID
    st, m = self.stepper, self.b.model
    k, v = st.window_kv(params, ctx_ids)
    b = ctx_ids.shape[0]
    x, z = S.first_step_input(m.cfg, jax.random.PRNGKey(0), b, z)
    sigma = jnp.full((b,), m.cfg.noise.sigma_max)
    feedback = ((t_codes, S.seam_codes(st.geometry, ctx_ids))
                if m.cfg.token_feedback else ())

    def logits(ids, e):
      return st._apply(params, x, sigma, st.style_cross(params, k, v, ids, e),
                       z, *feedback, method=S.StudentModel.token_logits)

    lg = logits(style_ids, emb)
    if self.w:
      lg = (1 + self.w) * lg - self.w * logits(
          jnp.full_like(style_ids, MASK_ID), jnp.zeros_like(emb))
    return jax.nn.log_softmax(
        lg / (self.token_temperature * m.cfg.pick_temperature), axis=-1)

  def _forced(self, params, ctx_ids, style_ids, emb, z, t_codes):
    """Teacher-forced picks: the forced distributions picked with the
    teacher's z -> codes (B, C, K). Where they equal the teacher's, the
    student would follow it; where not, a served chunk leaves it."""
    return self.b.model.books.codes(
        self._forced_log_probs(params, ctx_ids, style_ids, emb, z, t_codes), z)

  def _args(self, ctx_ids, style_ids, emb, z, t_codes):
    return (self.b.params, jnp.asarray(ctx_ids), jnp.asarray(style_ids),
            jnp.asarray(emb), jnp.asarray(z), jnp.asarray(t_codes, jnp.int32))

  def forced_codes(self, ctx_ids, style_ids, emb, z, t_codes):
    return np.asarray(self._forced_fn(
        *self._args(ctx_ids, style_ids, emb, z, t_codes)))

  def forced_log_probs(self, ctx_ids, style_ids, emb, z, t_codes):
    return np.asarray(self._forced_logp_fn(
        *self._args(ctx_ids, style_ids, emb, z, t_codes)))

  def __call__(self, ctx_ids, style_ids, emb, z, key):
    return np.asarray(self._fn(self.b.params, jnp.asarray(ctx_ids),
                               jnp.asarray(style_ids), jnp.asarray(emb),
                               jnp.asarray(z), key))


def held_out_styles(bundle):
  """The held-out prompts (the bare style names) -> (names, style
  embeddings f32 (B, E), style ids int32 (B, S))."""
  from mrt_distill.style import mixing
  from mrt_distill.world import music
  names = list(music.STYLES)
  sm = bundle.style_model
  emb = np.concatenate([sm.embed_text(n) for n in names]
                       ).reshape(len(names), -1).astype(np.float32)
  ids = mixing.style_tokens(sm, bundle.geometry, emb).astype(np.int32)
  return names, emb, ids


def measure(student: str, uncoupled: str | None, chunks: int, seed: int,
            png: str | None = None, log=print,
            cfg_weight: float | None = None,
            token_temperature: float = 1.0,
            slip_rates: tuple[float, ...] = ()) -> dict:
  from mrt_distill import coupling
  from mrt_distill.distill import student as S
  from mrt_distill.serve.bundle import load_student

  t0 = time.perf_counter()
  sb = load_student(student)
  if not sb.model.cfg.coupled:
    raise SystemExit(f"error: student {student!r} is not coupled "
                     f"(student.coupled=False); give a coupled student")
  players = {"coupled": Player(sb, cfg_weight, token_temperature)}
  if uncoupled:
    players["uncoupled"] = Player(load_student(uncoupled))
  samp = sb.config.sampling.to_dict()
  system = sb.teacher_system(**samp)
  g, codec, scaler = system.geometry, sb.codec, sb.scaler
  names, emb, style_ids = held_out_styles(sb)
  b = len(names)
  ctx = np.full((b, g.context_frames, g.target_levels), -1, np.int32)
  token_head = sb.model.cfg.token_head
  # coupled_forced: the chunk of the student's teacher-forced picks (token
  # heads): its distance is what the student would reach if it never left
  # the teacher's path; the gap to "coupled" is what its own slips cost.
  slips = {f"teacher_slips_{r:g}": float(r) for r in slip_rates}
  dist = {k: {"latent_mse": [], "logmel_db": []}
          for k in ["teacher_indep", *players]
          + (["coupled_forced", "teacher_at_student_slips"] if token_head
             else []) + list(slips)}
  slip_rng = np.random.default_rng(seed + 1)
  # The log-mel distance along the chunk (B, mel frames) per player: where
  # in the chunk a played chunk leaves teacher(z).
  along = {k: [] for k in dist}
  audio_keep = {k: [] for k in ["teacher", "teacher_indep", *players]}
  # Per RVQ level, the share of tokens equal to the teacher's for z: the
  # independent teacher's (chance) and the coupled student's teacher-forced
  # picks (token heads).
  agree = {k: [] for k in (
      ["teacher_indep", "coupled_forced", "teacher_at_student_slips"]
      if token_head else ["teacher_indep"])}
  for i in range(chunks):
    key = jax.random.PRNGKey(seed * 7919 + i)
    z = np.asarray(coupling.draw_noise(jax.random.fold_in(key, 0), g, b))
    z2 = np.asarray(coupling.draw_noise(jax.random.fold_in(key, 1), g, b))
    t_z = system.sample_codes(ctx, emb, noise=z)
    t_z2 = system.sample_codes(ctx, emb, noise=z2)
    lat = {"teacher": codec.dequantize(t_z),
           "teacher_indep": codec.dequantize(t_z2)}
    ids = S.context_ids(g, ctx)
    for k, p in players.items():
      lat[k] = p(ids, style_ids, emb, z, jax.random.fold_in(key, 2))
    if token_head:
      forced = players["coupled"].forced_codes(ids, style_ids, emb, z, t_z)
      lat["coupled_forced"] = codec.dequantize(forced)
      t_slip = system.sample_codes(
          ctx, emb, noise=redraw_noise(z, z2, forced != t_z))
      lat["teacher_at_student_slips"] = codec.dequantize(t_slip)
    for k, r in slips.items():
      lat[k] = codec.dequantize(system.sample_codes(
          ctx, emb, noise=redraw_noise(z, z2, slip_rng.random(t_z.shape) < r)))
    audio = {k: np.asarray(codec.decode_latents(jnp.asarray(v, jnp.float32))
                           ).mean(axis=-1) for k, v in lat.items()}
    mel = {k: _log_mel_db(a, g.sample_rate) for k, a in audio.items()}
    ref = np.asarray(scaler.to_student(lat["teacher"]))
    for k in dist:
      d = np.asarray(scaler.to_student(lat[k])) - ref
      dist[k]["latent_mse"].append(np.mean(d ** 2, axis=(1, 2)))
      along[k].append(np.mean(np.abs(mel[k] - mel["teacher"]), axis=2))
      dist[k]["logmel_db"].append(along[k][-1].mean(axis=1))
    for k in audio_keep:
      audio_keep[k].append(audio[k])
    agree["teacher_indep"].append(np.mean(t_z2 == t_z, axis=(0, 1)))
    if token_head:
      agree["coupled_forced"].append(np.mean(forced == t_z, axis=(0, 1)))
      agree["teacher_at_student_slips"].append(
          np.mean(t_slip == t_z, axis=(0, 1)))
    ctx = np.concatenate([ctx, t_z], axis=1)[:, -g.context_frames:]
    log(f"chunk {i + 1}/{chunks} ({time.perf_counter() - t0:.0f} s)",
        file=sys.stderr)

  out = {"student": student, "uncoupled": uncoupled, "chunks": chunks,
         "prompts": names, "seed": seed, "sampling": samp,
         "student_cfg_weight": players["coupled"].w,
         "student_pick_temperature": (
             token_temperature * sb.model.cfg.pick_temperature),
         "metrics": {}}
  floor = {m: float(np.mean(dist["teacher_indep"][m])) for m in
           ("latent_mse", "logmel_db")}
  rng = np.random.default_rng(seed)
  for k in dist:
    for m in ("latent_mse", "logmel_db"):
      v = float(np.mean(dist[k][m]))
      out["metrics"].setdefault(k, {})[m] = v
      out["metrics"][k][m + "_ratio_to_independent_teacher"] = v / floor[m]
      out["metrics"][k][m + "_ratio_ci90"] = ratio_ci90(
          np.mean(dist[k][m], axis=0), np.mean(dist["teacher_indep"][m],
                                               axis=0), rng)
  out["logmel_db_ratio_by_fifth_of_chunk"] = {
      k: ratio_by_part(np.concatenate(v), np.concatenate(
          along["teacher_indep"]), 5) for k, v in along.items()}
  out["token_agreement_per_level"] = {
      k: [round(float(a), 4) for a in np.mean(v, axis=0)]
      for k, v in agree.items()}
  out["seconds"] = time.perf_counter() - t0
  if png:
    _draw(png, {k: np.concatenate(v, axis=1) for k, v in audio_keep.items()},
          names, g.sample_rate)
    out["png"] = png
  return out


def redraw_noise(z_BxCxKxD, other_BxCxKxD, where_BxCxK) -> np.ndarray:
  """The coupling noise z with each (frame, level) vector in `where`
  replaced by the other draw's: the teacher then samples those tokens
  afresh (a slip) and every other token with z."""
  where = np.asarray(where_BxCxK, bool)
  if where.shape != np.shape(z_BxCxKxD)[:3]:
    raise ValueError(f"slip mask {where.shape} does not match the noise "
                     f"{np.shape(z_BxCxKxD)} (B, C, K, D)")
  return np.where(where[..., None], other_BxCxKxD, z_BxCxKxD)


def ratio_by_part(d_BxT, floor_BxT, parts: int) -> list[float]:
  """mean(d) / mean(floor) over each of `parts` consecutive stretches of
  the time axis (the last ones one frame shorter where T does not divide):
  1 where the student is no closer to teacher(z) than an independent
  sample."""
  d = np.array_split(np.asarray(d_BxT), parts, axis=1)
  f = np.array_split(np.asarray(floor_BxT), parts, axis=1)
  return [round(float(a.mean() / b.mean()), 4) for a, b in zip(d, f)]


def ratio_ci90(per_prompt, per_prompt_floor, rng,
               resamples: int = 2000) -> list[float]:
  """90% bootstrap interval of mean(d) / mean(floor) over the prompts
  (paired: a resample takes the same prompts for both)."""
  d, f = np.asarray(per_prompt), np.asarray(per_prompt_floor)
  picks = rng.integers(0, len(d), (resamples, len(d)))
  boot = d[picks].mean(1) / f[picks].mean(1)
  return [float(np.percentile(boot, 5)), float(np.percentile(boot, 95))]


def _draw(path: str, audio: dict, names: list[str], sr: int) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from mrt_distill import atomic
  rows = [n for n in STYLES_PNG if n in names]
  titles = {"teacher": "teacher, noise z", "coupled": "coupled student, z",
            "uncoupled": "uncoupled student (own noise)",
            "teacher_indep": "teacher, independent z'"}
  cols = [k for k in ("teacher", "coupled", "uncoupled", "teacher_indep")
          if k in audio]
  fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.6 * len(cols),
                                                          2.4 * len(rows)),
                           squeeze=False)
  for r, name in enumerate(rows):
    i = names.index(name)
    for c, k in enumerate(cols):
      db = _log_mel_db(audio[k][i:i + 1], sr)[0].T
      ax = axes[r][c]
      ax.imshow(db, origin="lower", aspect="auto", vmin=-60, vmax=db.max(),
                extent=(0, audio[k].shape[1] / sr, 0, db.shape[0]),
                cmap="magma")
      ax.set_title(f"{name}: {titles[k]}", fontsize=8)
      ax.set_xlabel("s", fontsize=7)
      ax.set_ylabel("mel band", fontsize=7)
      ax.tick_params(labelsize=6)
  fig.tight_layout()
  with atomic.target(pathlib.Path(path)) as tmp:
    fig.savefig(tmp, dpi=90, format="png")
  plt.close(fig)


def slip_rows(out: dict) -> list[tuple[float, str]]:
  """(slip rate, metrics key) of the uniform-slip rows, by rate, with the
  two ends every curve has: T(z) itself at 0 and T(z') at 1."""
  rows = sorted((float(k.rsplit("_", 1)[1]), k) for k in out["metrics"]
                if k.startswith("teacher_slips_"))
  if not rows or rows[0][0] > 0:
    rows.insert(0, (0.0, ""))  # "": T(z) itself, distance 0
  if rows[-1][0] < 1:
    rows.append((1.0, "teacher_indep"))
  return rows


def draw_slips(path: str, out: dict) -> None:
  """The slip bound as a figure: the teacher's distance to T(z) against
  the share of its tokens redrawn (latent and log-mel, 90% CI), the
  issue's 0.6 line, and the student -- played S(z) and the teacher at its
  slips -- at its own teacher-forced slip rate (1 - mean agreement)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from mrt_distill import atomic
  met = out["metrics"]
  rows = slip_rows(out)
  fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
  for ax, m, name in zip(axes, ("latent_mse", "logmel_db"),
                         ("latent MSE", "log-mel dB")):
    key = m + "_ratio_to_independent_teacher"
    x = [r for r, _ in rows]
    y = [met[k][key] if k else 0.0 for _, k in rows]
    ci = np.array([met[k][m + "_ratio_ci90"] if k else [0.0, 0.0]
                   for _, k in rows])
    ax.fill_between(x, ci[:, 0], ci[:, 1], alpha=0.2, color="C0")
    ax.plot(x, y, "o-", color="C0", label="teacher, tokens redrawn at random")
    ax.axhline(0.6, color="k", ls="--", lw=0.8, label="target 0.6x")
    if "teacher_at_student_slips" in met:
      slip = 1.0 - float(np.mean(
          out["token_agreement_per_level"]["coupled_forced"]))
      for k, mark, label in (
          ("coupled", "s", "student plays S(z)"),
          ("teacher_at_student_slips", "^",
           "teacher, redrawn at the student's slips"),
          ("coupled_forced", "x", "student, teacher-forced F(z)")):
        ax.plot([slip], [met[k][key]], mark, ms=8, label=label)
    ax.set_xlabel("share of tokens redrawn (teacher) or differing (student)")
    ax.set_ylabel(f"{name}: d(., T(z)) / d(T(z'), T(z))")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.2)
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7, loc="lower right")
  fig.suptitle(f"Slip bound: {out['student']}, {out['chunks']} chunks x "
               f"{len(out['prompts'])} prompts", fontsize=9)
  fig.tight_layout()
  with atomic.target(pathlib.Path(path)) as tmp:
    fig.savefig(tmp, dpi=90, format="png")
  plt.close(fig)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--student", default="reference",
                  help="coupled student: 'reference', a workdir or a .npz")
  ap.add_argument("--uncoupled", default=None,
                  help="an uncoupled student to measure side by side")
  ap.add_argument("--chunks", type=int, default=4,
                  help="chunks per prompt (contexts from the teacher)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--png", default=None, help="write the spectrogram figure")
  ap.add_argument("--cfg-weight", type=float, default=None,
                  help="the coupled student's guidance (default: its "
                       "config's student.cfg_weight)")
  ap.add_argument("--token-temperature", type=float, default=1.0,
                  help="the serving control token_temperature (x the "
                       "student's pick_temperature; 1 = as shipped)")
  ap.add_argument("--slip-rates", default="",
                  help="comma-separated token shares, e.g. 0.1,0.3: also "
                       "measure the teacher with its noise redrawn at that "
                       "share of tokens, picked at random (what a student "
                       "with that per-token accuracy and perfect recovery "
                       "would reach)")
  ap.add_argument("--slip-png", default=None,
                  help="with --slip-rates: draw the slip bound (distance "
                       "against slip rate, the student marked) to this PNG")
  ap.add_argument("--json", action="store_true")
  args = ap.parse_args(argv)
  if not 1 <= args.chunks <= 64:
    ap.error(f"--chunks {args.chunks}: give 1..64")
  if not 0 < args.token_temperature <= 10:
    ap.error(f"--token-temperature {args.token_temperature}: give a number "
             f"in (0, 10]")
  try:
    rates = tuple(float(r) for r in args.slip_rates.split(",") if r.strip())
  except ValueError:
    ap.error(f"--slip-rates {args.slip_rates!r}: give numbers in [0, 1] "
             f"separated by commas, e.g. 0.1,0.3")
  if any(not 0 <= r <= 1 for r in rates):
    ap.error(f"--slip-rates {args.slip_rates!r}: each rate must be in [0, 1]")
  if args.slip_png and not rates:
    ap.error("--slip-png draws the --slip-rates curve: give --slip-rates "
             "too, e.g. --slip-rates 0.05,0.1,0.2,0.4")
  from mrt_distill.serve.student_files import StudentLoadError
  try:
    res = measure(args.student, args.uncoupled, args.chunks, args.seed,
                  args.png, log=print, cfg_weight=args.cfg_weight,
                  token_temperature=args.token_temperature, slip_rates=rates)
  except StudentLoadError as e:  # missing, damaged or of another geometry
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.slip_png:
    draw_slips(args.slip_png, res)
    res["slip_png"] = args.slip_png
  if args.json:
    print(json.dumps(res, indent=2))
  else:
    for k, v in res["metrics"].items():
      ci = lambda m: "{:.2f}-{:.2f}".format(*v[m + "_ratio_ci90"])
      print(f"{k:14s} latent MSE {v['latent_mse']:.4f} "
            f"({v['latent_mse_ratio_to_independent_teacher']:.2f}x, 90% CI "
            f"{ci('latent_mse')})  log-mel {v['logmel_db']:.2f} dB "
            f"({v['logmel_db_ratio_to_independent_teacher']:.2f}x, 90% CI "
            f"{ci('logmel_db')})")
    for k, v in res["logmel_db_ratio_by_fifth_of_chunk"].items():
      print(f"{k:14s} log-mel ratio along the chunk, by fifths: "
            + " / ".join(f"{a:.2f}" for a in v))
    for k, v in res["token_agreement_per_level"].items():
      print(f"{k:14s} tokens equal to the teacher's, per level: "
            + " / ".join(f"{a:.3f}" for a in v))
  return 0


if __name__ == "__main__":
  sys.exit(main())
