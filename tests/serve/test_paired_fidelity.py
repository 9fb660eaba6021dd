"""tools/paired_fidelity.py: the student's chunk for the teacher's noise."""

from __future__ import annotations

import jax
import pytest
import numpy as np

import paired_fidelity as pf  # tools/ is on pytest's path (pytest.ini)


def test_the_paired_player_writes_the_serving_chunk():
  """For the same context window, style and coupling noise, the tool's
  player writes exactly the chunk the serving step writes for the shipped
  student (a recurrent pick at its guidance and pick temperature, its first
  frame reading the window's last frame): it plays through the serving
  sampler, `ChunkStepper.sample`, with the teacher's z. Caught: the player
  drawing its own z, or playing unguided. (The pick temperature and the
  seam are applied inside `sample`; test_chunk_step checks them.)"""
  from mrt_distill.distill import student as S
  from mrt_distill.serve.bundle import load_student
  from mrt_distill.serve.chunk_step import controls
  from mrt_distill.style import mixing
  sb = load_student("reference")
  assert sb.model.cfg.token_feedback and sb.model.cfg.pick_temperature != 1
  g, b = sb.geometry, 2
  stepper = sb.stepper(max_steps=1)
  codes = np.random.default_rng(0).integers(
      0, g.codebook_size, (b, g.context_frames, g.target_levels))
  ctx = np.asarray(S.context_ids(g, codes))
  state = stepper.window_state(sb.params, ctx)
  emb = np.stack([mixing.embed_prompt_mix(sb.style_model, s)
                  for s in ("funk", "techno")])
  ctl = controls(emb, float(sb.config.student.cfg_weight), 1)
  key = jax.random.PRNGKey(3)
  _, after = stepper.chunk_step(sb.params, state, ctl, key)
  _, z = S.first_step_input(sb.model.cfg, jax.random.fold_in(key, 0), b)
  lat = pf.Player(sb)(ctx, np.asarray(stepper.style_ids(ctl.style_emb)),
                      emb, np.asarray(z), jax.random.fold_in(key, 0))
  np.testing.assert_allclose(np.asarray(after.lead),
                             lat[:, -g.crossfade_frames:], rtol=1e-4,
                             atol=1e-4)
  # The token-temperature control reaches the player as it reaches serving
  # (caught: the player ignoring it).
  ctl_t = controls(emb, float(sb.config.student.cfg_weight), 1,
                   token_temperature=0.8)
  _, after_t = stepper.chunk_step(sb.params,
                                  stepper.window_state(sb.params, ctx),
                                  ctl_t, key)
  lat_t = pf.Player(sb, token_temperature=0.8)(
      ctx, np.asarray(stepper.style_ids(ctl.style_emb)), emb, np.asarray(z),
      jax.random.fold_in(key, 0))
  np.testing.assert_allclose(np.asarray(after_t.lead),
                             lat_t[:, -g.crossfade_frames:], rtol=1e-4,
                             atol=1e-4)
  assert np.abs(lat_t - lat).max() > 1e-2


def test_teacher_forced_picks_on_the_students_own_chunk_reproduce_it():
  """The agreement measure's teacher-forced picks read the codes before
  each token, as training does, guided and tempered as served: forced on
  the chunk the student itself plays (picked by the serving pick), they
  give back that chunk token for token. Caught: forcing unguided, at
  another temperature, or reading the wrong codes."""
  from mrt_distill.distill import student as S
  from mrt_distill.geometry import MASK_ID
  from mrt_distill.serve.bundle import load_student
  from mrt_distill.style import mixing
  sb = load_student("reference")
  g, b = sb.geometry, 2
  player = pf.Player(sb)
  st, m = player.stepper, sb.model
  codes = np.random.default_rng(1).integers(
      0, g.codebook_size, (b, g.context_frames, g.target_levels))
  ctx = np.asarray(S.context_ids(g, codes))
  emb = np.stack([mixing.embed_prompt_mix(sb.style_model, s)
                  for s in ("jazz", "techno")]).astype(np.float32)
  style_ids = np.asarray(st.style_ids(emb))
  key = jax.random.PRNGKey(5)
  x, z = S.first_step_input(m.cfg, key, b)
  k, v = st.window_kv(sb.params, ctx)
  both = st._both_halves(
      st.style_cross(sb.params, k, v, style_ids, emb),
      st.style_cross(sb.params, k, v, np.full_like(style_ids, MASK_ID),
                     np.zeros_like(emb)))
  dup = lambda a: np.concatenate([a, a])
  sigma = np.full((b,), m.cfg.noise.sigma_max, np.float32)
  h = st._apply(sb.params, dup(x), dup(sigma), both, dup(z),
                method=S.StudentModel.token_features)
  own = np.asarray(st._apply(
      sb.params, np.stack(np.split(h, 2)), z, S.seam_codes(g, ctx),
      player.w, m.cfg.pick_temperature, method=S.StudentModel.recurrent_codes))
  # That is the chunk the player (the serving sampler) writes for this z.
  np.testing.assert_allclose(
      player(ctx, style_ids, emb, np.asarray(z), key),
      np.asarray(sb.scaler.to_codec(m.books.latents(own))), atol=1e-4)
  forced = player.forced_codes(ctx, style_ids, emb, np.asarray(z), own)
  np.testing.assert_array_equal(forced, own)


def test_ratio_interval_is_paired_over_prompts():
  """The ratio's interval resamples prompts for the student and the floor
  together: a student at exactly half the floor on every prompt has the
  interval [0.5, 0.5] however much the prompts differ (an unpaired
  resample would spread it), and the interval holds the point ratio."""
  rng = np.random.default_rng(0)
  floor = rng.uniform(1.0, 20.0, 10)
  assert pf.ratio_ci90(floor / 2, floor, rng) == pytest.approx([0.5, 0.5])
  d = floor * rng.uniform(0.3, 1.2, 10)
  lo, hi = pf.ratio_ci90(d, floor, rng)
  assert lo < d.mean() / floor.mean() < hi and hi - lo > 0.05


def test_ratio_along_the_chunk_is_per_stretch_of_time():
  """Each fifth of the chunk is its own ratio to the floor over the same
  frames: a student that matches teacher(z) for the first 4 of 10 frames
  and is as far as the floor after reads 0, 0, 1, 1, 1 with 2 frames a
  fifth (caught: ratios over the whole chunk, or over other frames than
  the floor's); 11 frames split 3, 2, 2, 2, 2."""
  floor = np.random.default_rng(0).uniform(1.0, 5.0, (3, 10))
  d = floor.copy()
  d[:, :4] = 0.0
  assert pf.ratio_by_part(d, floor, 5) == pytest.approx([0, 0, 1, 1, 1])
  # 11 frames: the extra (first) frame at 3x the floor lifts the first
  # fifth's ratio only.
  f = np.concatenate([floor[:, :1], floor], axis=1)
  d = np.concatenate([3 * floor[:, :1], floor], axis=1)
  r = pf.ratio_by_part(d, f, 5)
  assert r[1:] == pytest.approx([1, 1, 1, 1])
  assert r[0] == pytest.approx(
      (d[:, :3].sum()) / f[:, :3].sum(), rel=1e-4) and r[0] > 1.2


def test_redrawn_noise_slips_exactly_the_masked_tokens():
  """The slip bound's noise keeps z at every (frame, level) outside the
  mask and takes the other draw's whole vector inside it (caught: slips at
  the wrong tokens, or mixing vectors across levels); a mask of another
  shape is refused with both shapes named."""
  rng = np.random.default_rng(0)
  z, other = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
  mask = rng.random((2, 3, 4)) < 0.5
  out = pf.redraw_noise(z, other, mask)
  np.testing.assert_array_equal(out[mask], other[mask])
  np.testing.assert_array_equal(out[~mask], z[~mask])
  np.testing.assert_array_equal(
      pf.redraw_noise(z, other, np.ones((2, 3, 4), bool)), other)
  with pytest.raises(ValueError, match=r"\(2, 3, 3\).*\(2, 3, 4, 5\)"):
    pf.redraw_noise(z, other, np.ones((2, 3, 3), bool))


def _slip_result(rates):
  met = {"teacher_indep": {}, "coupled": {}, "coupled_forced": {},
         "teacher_at_student_slips": {}}
  met.update({f"teacher_slips_{r:g}": {} for r in rates})
  for i, v in enumerate(met.values()):
    for m in ("latent_mse", "logmel_db"):
      v[m + "_ratio_to_independent_teacher"] = 0.1 * i
      v[m + "_ratio_ci90"] = [0.1 * i - 0.05, 0.1 * i + 0.05]
  return {"student": "x", "chunks": 1, "prompts": ["a", "b"], "metrics": met,
          "token_agreement_per_level": {"coupled_forced": [0.5, 0.3]}}


def test_slip_curve_runs_from_the_teacher_to_the_independent_teacher(
    tmp_path):
  """The curve's points are the uniform-slip rows by rate, from T(z) at 0
  (no row: distance 0) to T(z') at 1, and a rate of 1 given on the command
  line is that row, not T(z') twice; the figure is written as a PNG."""
  from PIL import Image
  rows = pf.slip_rows(_slip_result([0.2, 0.05]))
  assert rows == [(0.0, ""), (0.05, "teacher_slips_0.05"),
                  (0.2, "teacher_slips_0.2"), (1.0, "teacher_indep")]
  assert pf.slip_rows(_slip_result([0, 1])) == [
      (0.0, "teacher_slips_0"), (1.0, "teacher_slips_1")]
  png = tmp_path / "slips.png"
  pf.draw_slips(str(png), _slip_result([0.05, 0.2]))
  assert Image.open(png).format == "PNG" and Image.open(png).size[0] > 500


def test_slip_png_without_slip_rates_is_refused_before_loading(capsys):
  with pytest.raises(SystemExit) as e:
    pf.main(["--student", "no/such/student", "--slip-png", "x.png"])
  assert e.value.code == 2
  assert "give --slip-rates too" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    pf.main(["--student", "no/such/student", "--slip-rates", "0.1,2"])
  assert "each rate must be in [0, 1]" in capsys.readouterr().err


def test_a_redrawn_token_changes_only_what_the_teacher_plays_after_it():
  """The slip bound's premise, on the shipped teacher at its rollout
  sampling: with the noise of one token (frame 10, level 0) redrawn, every
  token before it is T(z)'s exactly; where the redrawn token comes out as
  T(z)'s, the whole chunk is T(z) (the same history and noise); where it
  differs, the teacher goes on from the slip. Caught: a redraw that leaks
  into other tokens' noise, or a decode that is not a function of the
  noise."""
  from mrt_distill import coupling
  from mrt_distill.serve.bundle import load_student
  from mrt_distill.style import mixing
  sb = load_student("reference")
  system = sb.teacher_system(**sb.config.sampling.to_dict())
  g, b, f = system.geometry, 6, 10
  emb = np.stack([mixing.embed_prompt_mix(sb.style_model, s) for s in (
      "funk", "techno", "jazz", "reggae", "ambient", "funk")]).astype(
          np.float32)
  ctx = np.full((b, g.context_frames, g.target_levels), -1, np.int32)
  key = jax.random.PRNGKey(11)
  z = np.asarray(coupling.draw_noise(jax.random.fold_in(key, 0), g, b))
  z2 = np.asarray(coupling.draw_noise(jax.random.fold_in(key, 1), g, b))
  mask = np.zeros(z.shape[:3], bool)
  mask[:, f, 0] = True
  t = system.sample_codes(ctx, emb, noise=z)
  t_s = system.sample_codes(ctx, emb, noise=pf.redraw_noise(z, z2, mask))
  np.testing.assert_array_equal(t_s[:, :f], t[:, :f])
  same = t_s[:, f, 0] == t[:, f, 0]
  assert 0 < same.sum() < b  # both cases occur at this seed
  np.testing.assert_array_equal(t_s[same], t[same])
  assert all((t_s[i, f:] != t[i, f:]).any() for i in np.flatnonzero(~same))


@pytest.mark.parametrize("tool", ["paired_fidelity", "coupling_agreement"])
def test_a_missing_student_is_one_line_naming_it(tool, tmp_path, capsys):
  """A student path that does not exist: exit 2 and one line that names
  it and the forms a student can take, no traceback."""
  import importlib
  missing = str(tmp_path / "nope.npz")
  assert importlib.import_module(tool).main(["--student", missing]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and err.startswith("error: student ")
  assert missing in err and "WORKDIR@STEP" in err
