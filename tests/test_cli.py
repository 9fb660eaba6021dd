"""The `mrt-distill` command line, run in-process through main(argv)."""

import json

import jax
import numpy as np
import pytest
import soundfile as sf

from mrt_distill import main as cli
from mrt_distill.teacher import load, model, t5x_format


def test_info_json(capsys):
  assert cli.main(["info", "--json", "--gin", "tiny"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["default_geometry"]["encoder_length"] == 1006
  assert out["default_geometry"]["padded_vocab_size"] == 29824
  assert out["teacher"]["params"] == 83_536
  assert out["backend"] == "cpu"


def test_info_text_names_base_sizes(capsys):
  assert cli.main(["info"]) == 0
  out = capsys.readouterr().out
  assert "347,873,472 parameters in 430 tensors" in out
  assert "encoder 84.95 M" in out


def test_no_command_prints_help(capsys):
  assert cli.main([]) == 2
  assert "import-t5x" in capsys.readouterr().out


def test_import_t5x_cli_round_trip(tmp_path, capsys):
  cfg = load.load_teacher_config("tiny")
  params = model.init_params(cfg, jax.random.PRNGKey(3))
  src = tmp_path / "t5x"
  t5x_format.write_t5x_checkpoint(src / "checkpoint_42",
                                  jax.tree.map(np.asarray, params), step=42)
  dst = tmp_path / "teacher"
  assert cli.main(["import-t5x", str(src), str(dst), "--gin", "tiny"]) == 0
  assert "step 42" in capsys.readouterr().out
  restored, cfg2 = load.load_teacher(dst)
  assert cfg2 == cfg
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_import_t5x_wrong_config_is_one_line_error(tmp_path, capsys):
  cfg = load.load_teacher_config("tiny")
  params = model.init_params(cfg, jax.random.PRNGKey(3))
  t5x_format.write_t5x_checkpoint(tmp_path / "t5x" / "checkpoint_1",
                                  jax.tree.map(np.asarray, params), step=1)
  rc = cli.main(["import-t5x", str(tmp_path / "t5x"), str(tmp_path / "out"),
                 "--gin", "reference"])
  err = capsys.readouterr().err
  assert rc == 1
  assert err.startswith("mrt-distill import-t5x: error:")
  assert "shape mismatch" in err and "geometry" in err
  assert "Traceback" not in err
  assert not (tmp_path / "out").exists()  # nothing half-written


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
  rc = cli.main(["import-t5x", str(tmp_path / "nope"), str(tmp_path / "o")])
  assert rc == 1
  assert "nope" in capsys.readouterr().err


def test_teacher_stream_writes_wav(tmp_path):
  """The default is the shipped reference world (16 kHz mono)."""
  out = tmp_path / "t.wav"
  assert cli.main(["teacher-stream", "--seconds", "1.5", "--out", str(out),
                   "--prompt", "techno:1, rock:0.5"]) == 0
  audio, sr = sf.read(out)
  assert sr == 16000 and len(audio) == 24000
  assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_teacher_stream_random_tiny(tmp_path):
  out = tmp_path / "t.wav"
  assert cli.main(["teacher-stream", "--checkpoint", "random-tiny",
                   "--seconds", "0.5", "--out", str(out)]) == 0
  audio, sr = sf.read(out)
  assert sr == 8000 and len(audio) == 4000
  assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_teacher_stream_bad_prompt(tmp_path, capsys):
  rc = cli.main(["teacher-stream", "--checkpoint", "random-tiny",
                 "--seconds", "0.2", "--out", str(tmp_path / "x.wav"),
                 "--prompt", "techno:-1"])
  assert rc == 1
  assert "negative" in capsys.readouterr().err
  assert not (tmp_path / "x.wav").exists()


def test_bad_arguments_are_refused_before_any_model_loads(
    capsys, monkeypatch, tmp_path):
  """Unknown prompt words (checked against the reference vocabulary read
  from its JSON sidecar) and out-of-range sizes end the command before
  load_student is ever called."""
  import pytest
  from mrt_distill.serve import bundle

  def never(*_a, **_k):
    raise AssertionError("load_student was called")

  monkeypatch.setattr(bundle, "load_student", never)
  monkeypatch.chdir(tmp_path)
  for argv, msg in (
      (["generate", "--prompt", "funk:1, flutte:0.5"],
       "prompt 'flutte' has unknown word(s) 'flutte'"),
      (["generate", "--transition", "funk -> jaz over 4s"],
       "(target mix B): prompt 'jaz' has unknown word(s) 'jaz'"),
      (["generate", "--checkpoint", "random-tiny", "--seconds", "7200"],
       "--seconds 7200: at most 3600"),
      (["serve", "--prompt", "technoo"], "unknown word(s) 'technoo'"),
      (["serve", "--checkpoint", "random-tiny", "--lead-chunks", "0"],
       "--lead-chunks 0: must be in 1..16")):
    assert cli.main(argv) == 1, argv
    assert msg in capsys.readouterr().err, argv
  assert list(tmp_path.iterdir()) == []
  # A tiny-world student has no closed vocabulary: nothing to check early,
  # so the command goes on to load it.
  with pytest.raises(AssertionError, match="load_student was called"):
    cli.main(["generate", "--checkpoint", "random-tiny", "--prompt", "zzz"])


def test_compilation_cache_flag_and_folder(monkeypatch, tmp_path):
  monkeypatch.setenv("MRT_DISTILL_CACHE_DIR", str(tmp_path / "c"))
  assert cli.compilation_cache_dir() == tmp_path / "c"
  monkeypatch.delenv("MRT_DISTILL_CACHE_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
  assert cli.compilation_cache_dir() == tmp_path / "x" / "mrt_distill" / "jax"
  p = cli.build_parser()
  assert p.parse_args(["generate", "--no-cache"]).no_cache is True
  assert p.parse_args(["--no-cache", "serve"]).no_cache is True
  assert p.parse_args(["distill"]).no_cache is False
  # In a process that imported jax already, main() leaves its config be.
  before = jax.config.jax_compilation_cache_dir
  cli.main(["generate", "--seconds", "0"])
  assert jax.config.jax_compilation_cache_dir == before


@pytest.mark.slow
def test_a_fresh_process_caches_compiled_programs_unless_no_cache(tmp_path):
  """Two tiny generate runs (about a minute on 2 busy cores)."""
  import subprocess
  import sys
  code = ("import sys; from mrt_distill import main; "
          "sys.exit(main.main(sys.argv[1:]))")
  env = {**__import__("os").environ,
         "MRT_DISTILL_CACHE_DIR": str(tmp_path / "jc"),
         # Every program, however fast it compiled on this machine.
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  args = ["generate", "--checkpoint", "random-tiny", "--seconds", "0.3",
          "--out", str(tmp_path / "a.wav")]
  r = subprocess.run([sys.executable, "-c", code, "--no-cache", *args],
                     env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert not (tmp_path / "jc").exists()
  r = subprocess.run([sys.executable, "-c", code, *args], env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert any((tmp_path / "jc").iterdir())  # compiled programs were cached
