"""Every file mrt-distill writes survives a failed write of its replacement.

For each write path, the writer underneath (soundfile, matplotlib, numpy,
plain file writes) is made to fail half way -- it writes some bytes, then
raises as a full disk does -- while a file of the same name exists. The
call must raise, the existing file must be byte for byte what it was, and
no temporary may be left beside it. A source scan keeps new code from
writing any other way.
"""

from __future__ import annotations

import ast
import errno
import json
import pathlib

import numpy as np
import pytest

from mrt_distill import atomic

OLD = b"the user's existing file\n"
PKG = pathlib.Path(__file__).resolve().parents[1] / "mrt_distill"


def _disk_full(*_a, **_k):
  raise OSError(errno.ENOSPC, "No space left on device")


def _partial_then_fail(path_arg_index=0):
  """A stand-in writer: writes half a file at the path it was given, then
  fails like a full disk."""
  def writer(*args, **kwargs):
    target = args[path_arg_index]
    pathlib.Path(target).write_bytes(b"half a fi")
    _disk_full()
  return writer


def _assert_survived(path: pathlib.Path):
  assert path.read_bytes() == OLD
  assert sorted(p.name for p in path.parent.iterdir()) == sorted(
      p.name for p in path.parent.iterdir() if atomic.TMP_MARK not in p.name)


@pytest.fixture
def failing_open(monkeypatch):
  """Plain writes in atomic.py write half their bytes, then fail."""
  real_open = open

  class Half:
    def __init__(self, f):
      self.f = f

    def write(self, data):
      self.f.write(data[:len(data) // 2])
      self.f.flush()
      _disk_full()

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.f.close()

  monkeypatch.setattr(atomic, "open", lambda p, mode="r", *a, **k: Half(
      real_open(p, mode, *a, **k)), raising=False)


def _existing(tmp_path, name) -> pathlib.Path:
  p = tmp_path / name
  p.parent.mkdir(parents=True, exist_ok=True)
  p.write_bytes(OLD)
  return p


# ---- audio (generate, teacher-stream) -------------------------------------------
def test_wav(tmp_path, monkeypatch):
  import soundfile
  from mrt_distill.teacher import stream_cli
  out = _existing(tmp_path, "a.wav")
  monkeypatch.setattr(soundfile, "write", _partial_then_fail())
  with pytest.raises(OSError, match="No space"):
    stream_cli.write_audio(out, np.zeros((160, 1), np.float32), 16000)
  _assert_survived(out)


def test_wav_written_whole_when_the_write_succeeds(tmp_path):
  import soundfile
  from mrt_distill.teacher import stream_cli
  out = _existing(tmp_path, "a.wav")
  x = np.linspace(-0.5, 0.5, 160, dtype=np.float32)[:, None]
  stream_cli.write_audio(out, x, 16000)
  y, rate = soundfile.read(out, dtype="float32", always_2d=True)
  assert rate == 16000 and np.allclose(y, x, atol=1e-4)
  assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


# ---- figures (generate's spectrogram, distill's loss curves, eval) --------------
@pytest.fixture
def failing_savefig(monkeypatch):
  from matplotlib.figure import Figure
  monkeypatch.setattr(Figure, "savefig",
                      lambda self, path, **k: _partial_then_fail()(path))


def test_spectrogram_png(tmp_path, failing_savefig):
  from mrt_distill.distill.plots import save_spectrogram
  out = _existing(tmp_path, "a.png")
  with pytest.raises(OSError, match="No space"):
    save_spectrogram(np.zeros((16000, 1), np.float32), 16000, out)
  _assert_survived(out)


def test_loss_curves_png(tmp_path, failing_savefig):
  from mrt_distill.distill.plots import plot_loss_curves
  out = _existing(tmp_path, "loss_curves.png")
  (tmp_path / "metrics.jsonl").write_text(
      json.dumps({"step": 1, "loss/total": 1.0}) + "\n")
  with pytest.raises(OSError, match="No space"):
    plot_loss_curves(tmp_path)
  _assert_survived(out)


def test_eval_figure_png(tmp_path, failing_savefig):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from mrt_distill.eval import figures
  out = _existing(tmp_path, "speed.png")
  with pytest.raises(OSError, match="No space"):
    figures._save(plt.figure(), out)
  _assert_survived(out)


# ---- text (config.json, summaries, reports, checksum sidecars) ------------------
def test_atomic_write_text(tmp_path, failing_open):
  out = _existing(tmp_path, "config.json")
  with pytest.raises(OSError, match="No space"):
    atomic.write_text(out, "{}")
  _assert_survived(out)


def test_distill_report(tmp_path, failing_open, monkeypatch):
  from mrt_distill.distill import report
  monkeypatch.setattr(report, "to_markdown", lambda r: "# report\n")
  out = _existing(tmp_path, "report.json")
  with pytest.raises(OSError, match="No space"):
    report.write({"summary": {}}, tmp_path)
  _assert_survived(out)


def test_eval_report(tmp_path, failing_open):
  from mrt_distill.eval import report
  out = _existing(tmp_path, "report.json")
  with pytest.raises(OSError, match="No space"):
    report.write({"models": []}, tmp_path)
  _assert_survived(out)


def test_teacher_meta(tmp_path, failing_open, monkeypatch):
  """import-t5x's teacher.json (the orbax params are orbax's own atomic
  write)."""
  from mrt_distill.teacher import load
  meta = _existing(tmp_path, f"teacher/{load._META}")
  import orbax.checkpoint as ocp
  monkeypatch.setattr(load, "check_params", lambda *a: None)
  monkeypatch.setattr(ocp.PyTreeCheckpointer, "save", lambda *a, **k: None)
  cfg = load.load_teacher_config("tiny")
  with pytest.raises(OSError, match="No space"):
    load.save_teacher(tmp_path / "teacher", {}, cfg)
  _assert_survived(meta)


def test_checksummed_npz_and_sidecar(tmp_path, monkeypatch, failing_open):
  from mrt_distill import checksummed
  out = _existing(tmp_path, "w.npz")
  side = _existing(tmp_path, "w.npz.json")
  real = checksummed._write_deterministic_npz
  monkeypatch.setattr(checksummed, "_write_deterministic_npz",
                      lambda p, a: _partial_then_fail()(p))
  with pytest.raises(OSError, match="No space"):
    checksummed.save_npz(out, {"x": np.ones(3)})
  _assert_survived(out)
  # The weights written, the sidecar's write fails: the old sidecar stays.
  monkeypatch.setattr(checksummed, "_write_deterministic_npz", real)
  with pytest.raises(OSError, match="No space"):
    checksummed.save_npz(out, {"x": np.ones(3)})
  assert side.read_bytes() == OLD


# ---- the exported student ----------------------------------------------------
def test_student_npz(tmp_path, monkeypatch):
  from mrt_distill.distill import config_io
  from mrt_distill.serve import bundle
  out = _existing(tmp_path, "student.npz")
  monkeypatch.setattr(np, "savez", _partial_then_fail())
  with pytest.raises(OSError, match="No space"):
    bundle.export_student(config_io.load_config("reference_cpu:tiny"),
                          {"w": np.ones(2, np.float32)}, out)
  _assert_survived(out)


# ---- the metrics log (appended) ------------------------------------------------
def test_metrics_append_keeps_every_earlier_row_whole(tmp_path, monkeypatch):
  from mrt_distill.distill.metric_writer import MetricWriter
  w = MetricWriter(tmp_path, resume_step=0)
  w.write(1, {"loss": 1.0})
  before = (tmp_path / "metrics.jsonl").read_bytes()
  real_write = atomic.os.write

  def half(fd, data):
    real_write(fd, bytes(data[:len(data) // 2]))
    _disk_full()

  monkeypatch.setattr(atomic.os, "write", half)
  with pytest.raises(OSError, match="No space"):
    w.write(2, {"loss": 0.5})
  monkeypatch.setattr(atomic.os, "write", real_write)
  assert (tmp_path / "metrics.jsonl").read_bytes() == before  # no torn row
  w.write(2, {"loss": 0.5})
  w.close()
  rows = [json.loads(l) for l in
          (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2]


def test_metrics_rewrite_on_resume(tmp_path, failing_open):
  from mrt_distill.distill.metric_writer import MetricWriter
  path = tmp_path / "metrics.jsonl"
  path.write_bytes(OLD.replace(b"the user's existing file",
                               b'{"step": 1}\n{"step": 5}'))
  before = path.read_bytes()
  with pytest.raises(OSError, match="No space"):
    MetricWriter(tmp_path, resume_step=3)
  assert path.read_bytes() == before


# ---- nothing writes another way -------------------------------------------------
_RAW = {"write_text", "write_bytes", "savefig", "savez", "savez_compressed"}
# Writes that are atomic another way, each with its reason.
_ALLOWED = {
    # Fills a fresh temporary checkpoint folder, renamed whole (os.replace).
    "teacher/t5x_format.py": "write_bytes",
    # Builds fake Magenta RT assets for tests into a new folder.
    "interop/fake_assets.py": "write_",
}


def test_no_module_writes_files_around_the_atomic_helper():
  """Raw writes (Path.write_text/bytes, savefig, np.savez, soundfile.write,
  open(..., 'w'/'a')) only inside atomic.py or a `with atomic.target(...)`
  block."""
  offenders = []
  for path in sorted(PKG.rglob("*.py")):
    if path.name == "atomic.py":
      continue
    tree = ast.parse(path.read_text())
    safe = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.With) and any(
          "atomic.target" in ast.unparse(i.context_expr) for i in node.items):
        safe.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
      if not isinstance(node, ast.Call) or id(node) in safe:
        continue
      f = node.func
      name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
      raw = name in _RAW or (
          name == "write" and isinstance(f, ast.Attribute)
          and ast.unparse(f.value) in ("sf", "soundfile"))
      if name == "open" and len(node.args) > 1:
        mode = node.args[1]
        raw = isinstance(mode, ast.Constant) and set(str(mode.value)) & set(
            "wax")
      if isinstance(f, ast.Attribute) and ast.unparse(f.value) == "atomic":
        raw = False
      rel = str(path.relative_to(PKG))
      if raw and _ALLOWED.get(rel, "\0") in ast.unparse(node):
        raw = False
      if raw:
        offenders.append(f"{path.relative_to(PKG)}:{node.lineno}: "
                         f"{ast.unparse(node)[:70]}")
  assert not offenders, "\n".join(offenders)
