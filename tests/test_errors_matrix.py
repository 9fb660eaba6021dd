"""Every bad input in docs/errors.md, fed for real: the message, and nothing
of the user's lost.

The table in docs/errors.md is the source of truth: each row's id names a
case here, and the row's message column (fragments separated by " … ") must
appear, in order, in what the user sees -- stderr of `mrt-distill` run
in-process through main(argv) for CLI rows, the exception text for Python
API rows. A row without a case, or a case without a row, fails
`test_every_documented_row_has_a_case`, so the page cannot drift from the
code.

For every row the test also hashes every file under the test's folder (the
user's inputs, an existing workdir, the current directory) before and after:
a refused input must not change, remove or add a file. CLI rows must also
end with an exit status, never a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import re
import shutil
from collections.abc import Callable

import numpy as np
import pytest

from mrt_distill import main as cli_main

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "errors.md"
MATRIX_HEADING = "## The matrix"


# ---- the documented rows ----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Row:
  id: str
  fragments: tuple[str, ...]


def _doc_rows() -> dict[str, Row]:
  """Rows of the table under MATRIX_HEADING: | `id` | input | where |
  ``message`` |."""
  text = DOC.read_text()
  section = text.split(MATRIX_HEADING, 1)[1].split("\n## ", 1)[0]
  rows = {}
  for line in section.splitlines():
    m = re.match(r"^\|\s*`([a-z0-9-]+)`\s*\|", line)
    if not m:
      continue
    msg = re.search(r"``\s?(.+?)\s?``\s*\|\s*$", line)
    assert msg, f"row {m.group(1)}: the message column must be ``...``"
    rows[m.group(1)] = Row(m.group(1), tuple(
        f for f in re.split(r"\s*…\s*", msg.group(1)) if f))
  return rows


ROWS = _doc_rows()


def files(root: pathlib.Path) -> dict[str, str]:
  """{path: sha256} of every file under root, and "<dir>" for folders."""
  return {str(p.relative_to(root)): (
      hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>")
          for p in sorted(root.rglob("*"))}


# ---- how each row is fed ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
  setup: Callable[[pathlib.Path], object]  # tmp -> argv list or a callable
  # API rows: -> the exception type (resolved when the row runs, so that
  # collecting this file imports no model code).
  error: Callable[[], type[BaseException]] | None = None
  slow: bool = False
  # Empty folders the code is known to create (no file is ever allowed).
  new_dirs: tuple[str, ...] = ()


CASES: dict[str, Case] = {}
# Undone after each row (e.g. a workdir lock the row's setup holds).
_CLEANUP: list[Callable[[], object]] = []


def case(row_id: str, error=None, slow=False, new_dirs=()):
  def register(setup):
    CASES[row_id] = Case(setup, error, slow, new_dirs)
    return setup
  return register


TINY = ("--config", "reference_cpu:tiny", "--workdir", "w")


def _write(tmp, name, text, mode="w"):
  p = tmp / name
  p.parent.mkdir(parents=True, exist_ok=True)
  if mode == "wb":
    p.write_bytes(text)
  else:
    p.write_text(text)
  return p


# CLI and configs.
@case("cli-unknown-command")
def _(tmp):
  return ["bogus"]


@case("cli-unknown-flag")
def _(tmp):
  return ["distill", *TINY, "--steps", "5"]


@case("cfg-unknown-key")
def _(tmp):
  return ["distill", *TINY, "--config.train.stepz=3"]


@case("cfg-wrong-type")
def _(tmp):
  return ["distill", *TINY, "--config.train.steps=many"]


@case("cfg-not-a-group")
def _(tmp):
  return ["distill", *TINY, "--config.train.steps.max=3"]


@case("cfg-no-equals")
def _(tmp):
  return ["distill", *TINY, "--config.train.steps"]


@case("cfg-not-found")
def _(tmp):
  return ["distill", "--config", "no_such_config", "--workdir", "w"]


@case("cfg-bad-arg")
def _(tmp):
  return ["distill", "--config", "reference_cpu:big", "--workdir", "w"]


@case("cfg-syntax-error")
def _(tmp):
  _write(tmp, "my_config.py", "def get_config(arg=None):\n  return (\n")
  return ["distill", "--config", "my_config.py", "--workdir", "w"]


@case("cfg-no-get-config")
def _(tmp):
  _write(tmp, "my_config.py", "STEPS = 3\n")
  return ["distill", "--config", "my_config.py", "--workdir", "w"]


@case("cfg-unknown-world")
def _(tmp):
  return ["distill", *TINY, "--config.world=refrence"]


@case("cfg-magenta-world")
def _(tmp):
  return ["distill", *TINY, "--config.world=magenta_rt"]


@case("asset-missing")
def _(tmp):
  (tmp / "assets").mkdir()
  return ["distill", "--config", "mrt_base_v5e", "--workdir", "w",
          "--config.mesh_shape=(1, 1, 1)"] + [
              f"--config.magenta_rt.{k}=assets"
              for k in ("teacher", "spectrostream", "musiccoca")]


@case("cfg-energy-one-draw")
def _(tmp):
  return ["distill", *TINY, "--config.losses.energy=1",
          "--config.student.imle_samples=1"]


@case("cfg-imle-select")
def _(tmp):
  return ["distill", *TINY, "--config.student.imle_select=nearest"]


@case("cfg-own-picks-from")
def _(tmp):
  return ["distill", *TINY, "--config.student.own_picks_from=free"]


@case("cfg-ema-decay")
def _(tmp):
  return ["distill", *TINY, "--config.optim.ema_decay=1.5"]


@case("cfg-style-no-tower")
def _(tmp):
  return ["distill", *TINY, "--config.losses.style=1"]


@case("cfg-optimizer")
def _(tmp):
  return ["distill", *TINY, "--config.optim.name=sgd"]


@case("cfg-mesh-too-big")
def _(tmp):
  return ["distill", *TINY, "--config.mesh_shape=(64, 1, 1)"]


@case("workdir-is-a-file")
def _(tmp):
  _write(tmp, "notes.txt", "my notes\n")
  return ["distill", "--config", "reference_cpu:tiny", "--workdir",
          "notes.txt"]


@case("workdir-not-a-run")
def _(tmp):
  _write(tmp, "mine/notes.txt", "my notes\n")
  return ["distill", "--config", "reference_cpu:tiny", "--workdir", "mine"]


@case("workdir-in-use")
def _(tmp):
  """The holder is this process (a flock is per open file: the command's
  own claim conflicts with it); tests/distill/test_workdir.py runs two."""
  from mrt_distill.distill import workdir as W
  held = W.claim(tmp / "w")
  held.__enter__().start()
  _CLEANUP.append(lambda: held.__exit__(None, None, None))
  return ["distill", *TINY]


@case("workdir-other-host")
def _(tmp):
  from mrt_distill.distill import workdir as W
  _write(tmp, f"w/{W.MARKER}", "{}")
  _write(tmp, f"w/{W.LOCK_FILE}", json.dumps(
      {"pid": 7, "host": "tpu-vm-3", "started": "2026-01-01T00:00:00+00:00"}))
  return ["distill", *TINY]


@case("cfg-steps-zero")
def _(tmp):
  return ["distill", *TINY, "--config.train.steps=0"]


@case("cfg-replay-too-big")
def _(tmp):
  return ["distill", *TINY, "--config.rollout.replay_capacity=100000000"]


def _checkpoint_at_step_3(tmp, config, **meta):
  """A workdir `w` whose one checkpoint (step 3) was written by `config`,
  with `meta` added to its metadata item."""
  import orbax.checkpoint as ocp
  from mrt_distill.distill import config_io
  _write(tmp, "w/config.json", config.to_json())
  mngr = ocp.CheckpointManager(
      (tmp / "w" / "checkpoints").absolute(),
      options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
  mngr.save(3, args=ocp.args.Composite(
      state=ocp.args.StandardSave({"w": np.zeros(3, np.float32)}),
      meta=ocp.args.JsonSave({
          "fingerprint": config_io.shape_fingerprint(config), **meta})))
  mngr.close()


@case("ckpt-other-config")
def _(tmp):
  from mrt_distill.distill import config_io
  other = config_io.load_config("reference_cpu:tiny")
  other.rollout.batch = 2
  _checkpoint_at_step_3(tmp, other)
  return ["distill", *TINY]


@case("ckpt-coupled-switch")
def _(tmp):
  from mrt_distill.distill import config_io
  _checkpoint_at_step_3(tmp, config_io.load_config("reference_cpu:tiny"))
  return ["distill", *TINY, "--config.student.coupled=False",
          "--config.student.token_head=False",
          "--config.student.token_feedback=False",
          "--config.student.imle_samples=4"]


@case("ckpt-other-teacher")
def _(tmp):
  from mrt_distill.distill import config_io
  _checkpoint_at_step_3(
      tmp, config_io.load_config("reference_cpu:tiny"),
      teacher={"world": "random-tiny", "id": "random-tiny seed 99"})
  return ["distill", *TINY]


# Prompt files.
def _prompts(name, content, mode="w"):
  def setup(tmp):
    _write(tmp, name, content, mode)
    return ["distill", *TINY, f"--config.prompts.file={name}"]
  return setup


case("prompts-bad-weight")(
    _prompts("prompts.txt", "techno\n# a comment\nfunk:0.5, flute:lots\n"))
case("prompts-extension")(_prompts("prompts.md", "techno\n"))
case("prompts-not-utf8")(
    _prompts("prompts.txt", "techno\ncaf\xe9 jazz\n".encode("latin-1"), "wb"))
case("prompts-only-comments")(
    _prompts("prompts.txt", "# techno\n\n# ambient\n"))
case("prompts-csv-unquoted-mix")(
    _prompts("prompts.csv", "prompt\ntechno:1, flute:0.5\n"))
case("prompts-csv-no-header")(_prompts("prompts.csv", "techno\nambient\n"))
case("prompts-jsonl-bad-json")(
    _prompts("prompts.jsonl", '"techno"\n{"prompt": "ambient"\n'))
case("prompts-fractional-over")(
    _prompts("prompts.txt", "techno -> ambient over 2.5\n"))


@case("prompts-missing")
def _(tmp):
  return ["distill", *TINY, "--config.prompts.file=prompt.txt"]


# teacher-stream, import-t5x, info.
STREAM = ("teacher-stream", "--checkpoint", "random-tiny")


@case("stream-seconds")
def _(tmp):
  return [*STREAM, "--seconds", "0", "--out", "a.wav"]


@case("stream-seconds-too-long")
def _(tmp):
  return [*STREAM, "--seconds", "1e9", "--out", "a.wav"]


@case("stream-temperature")
def _(tmp):
  return [*STREAM, "--temperature", "-1", "--out", "a.wav"]


@case("stream-top-k")
def _(tmp):
  return [*STREAM, "--top-k", "-5", "--out", "a.wav"]


@case("stream-out-folder-missing")
def _(tmp):
  return [*STREAM, "--out", "renders/a.wav"]


@case("stream-out-extension")
def _(tmp):
  return [*STREAM, "--out", "a.mp3x"]


@case("stream-out-is-folder")
def _(tmp):
  (tmp / "renders").mkdir()
  _write(tmp, "renders/old.wav", "keep me")
  return [*STREAM, "--out", "renders"]


@case("stream-bad-prompt")
def _(tmp):
  return [*STREAM, "--prompt", "techno:-1", "--out", "a.wav"]


@case("stream-empty-prompt")
def _(tmp):
  return [*STREAM, "--prompt", " ", "--out", "a.wav"]


@case("teacher-missing")
def _(tmp):
  return ["teacher-stream", "--checkpoint", "teachers/base", "--out", "a.wav"]


@case("teacher-is-a-student-workdir")
def _(tmp):
  _write(tmp, "runs/ref/config.json", "{}")
  (tmp / "runs" / "ref" / "checkpoints").mkdir()
  return ["teacher-stream", "--checkpoint", "runs/ref", "--out", "a.wav"]


def _tiny_t5x(tmp) -> pathlib.Path:
  """A t5x checkpoint of the tiny teacher's shapes (zeros: only names and
  shapes matter to the importer)."""
  import jax
  from mrt_distill.teacher import load, model, t5x_format
  cfg = load.load_teacher_config("tiny")
  shapes = jax.eval_shape(lambda k: model.init_params(cfg, k),
                          jax.random.PRNGKey(0))
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  t5x_format.write_t5x_checkpoint(tmp / "t5x" / "checkpoint_1", params,
                                  step=1)
  return tmp / "t5x"


@case("import-wrong-gin")
def _(tmp):
  _tiny_t5x(tmp)
  return ["import-t5x", "t5x", "teacher", "--gin", "reference"]


@case("import-missing-source")
def _(tmp):
  return ["import-t5x", "downloads/llm_base_x4286_c1860k", "teacher"]


@case("import-unknown-compressor")
def _(tmp):
  zarray = (_tiny_t5x(tmp) / "checkpoint_1" / "target.encoder.encoder_norm.scale"
            / ".zarray")
  meta = json.loads(zarray.read_text())
  meta["compressor"] = {"id": "lz4"}
  zarray.write_text(json.dumps(meta))
  return ["import-t5x", "t5x", "teacher", "--gin", "tiny"]


@case("import-param-dtype")
def _(tmp):
  """encoder.encoder_norm.scale rewritten as int32 (msgpack spec and .zarray
  agree, as a foreign writer would have them)."""
  import flax.serialization
  import tensorstore as ts
  ckpt = _tiny_t5x(tmp) / "checkpoint_1"
  contents = flax.serialization.msgpack_restore(
      (ckpt / "checkpoint").read_bytes())
  contents["optimizer"]["target"]["encoder"]["encoder_norm"]["scale"][
      "dtype"] = "int32"
  (ckpt / "checkpoint").write_bytes(
      flax.serialization.msgpack_serialize(contents))
  adir = ckpt / "target.encoder.encoder_norm.scale"
  shutil.rmtree(adir)
  ts.open({"driver": "zarr", "dtype": "int32",
           "kvstore": {"driver": "file", "path": str(adir)},
           "metadata": {"shape": [32], "chunks": [32]}},
          create=True).result().write(np.ones(32, np.int32)).result()
  return ["import-t5x", "t5x", "teacher", "--gin", "tiny"]


@case("import-ocdbt")
def _(tmp):
  import orbax.checkpoint as ocp
  with ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save((tmp / "run" / "checkpoint_7").resolve(),
               {"target": {"w": np.ones((4, 3), np.float32)}})
  return ["import-t5x", "run", "teacher"]


@case("info-unknown-gin")
def _(tmp):
  return ["info", "--gin", "medium"]


def _asset_copy(tmp, damage: bool):
  """A copy of the shipped teacher weights, byte 1000 flipped (damage) or
  the file left out; the world is pointed at the copy."""
  from mrt_distill.world.runtime import assets
  src = assets.path("teacher")
  dst = tmp / "assets"
  dst.mkdir()
  if damage:
    shutil.copy(src, dst / src.name)
    shutil.copy(src.with_name(src.name + ".json"),
                dst / (src.name + ".json"))
    with open(dst / src.name, "r+b") as f:
      f.seek(1000)
      b = f.read(1)
      f.seek(1000)
      f.write(bytes([b[0] ^ 0xFF]))
  return dst


@case("asset-damaged")
def _(tmp):
  _asset_copy(tmp, damage=True)
  return ["teacher-stream", "--out", "a.wav"]


@case("asset-missing")
def _(tmp):
  _asset_copy(tmp, damage=False)
  return ["teacher-stream", "--out", "a.wav"]


# Student checkpoints (mrt-distill generate / serve / eval --checkpoint).
def _load_student(source):
  from mrt_distill.serve import bundle
  return lambda: bundle.load_student(source)


def _student_error():
  from mrt_distill.serve.bundle import StudentLoadError
  return StudentLoadError


def _value_error():
  return ValueError


@case("student-not-found", error=_student_error)
def _(tmp):
  return _load_student("runs/refrence_cpu")


@case("student-not-a-student-file", error=_student_error)
def _(tmp):
  _write(tmp, "student.npz", "not a zip file\n")
  return _load_student("student.npz")


@case("student-other-format", error=_student_error)
def _(tmp):
  meta = {"format": "mrt_distill.student/v0", "config": {}}
  np.savez(tmp / "student.npz", __meta__=np.frombuffer(
      json.dumps(meta).encode(), np.uint8))
  return _load_student("student.npz")


@case("student-other-teacher", error=_student_error)
def _(tmp):
  from mrt_distill.distill import config_io
  cfg = config_io.load_config("reference_cpu:tiny")
  meta = {"format": "mrt_distill.student/v1",
          "config": json.loads(cfg.to_json()),
          "teacher": "random-tiny seed 99"}
  np.savez(tmp / "student.npz", __meta__=np.frombuffer(
      json.dumps(meta).encode(), np.uint8))
  return _load_student("student.npz")


@case("student-noise-layout", error=_student_error)
def _(tmp):
  from mrt_distill.distill import config_io
  cfg = config_io.load_config("reference_cpu:tiny")  # coupled
  meta = {"format": "mrt_distill.student/v1",
          "config": json.loads(cfg.to_json()),
          "teacher": "random-tiny seed 0", "noise_layout": "dd0/old"}
  np.savez(tmp / "student.npz", __meta__=np.frombuffer(
      json.dumps(meta).encode(), np.uint8))
  return _load_student("student.npz")


def _student_like(tmp, name):
  """A file shaped like a student file: metadata and one parameter array
  of a recognisable byte pattern."""
  meta = {"format": "mrt_distill.student/v1", "config": {}}
  path = tmp / name
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8),
           **{"params/w": np.full(256, 0x5A5A5A5A, np.uint32)})
  return path


@case("student-empty-file")
def _(tmp):
  (tmp / "w" / "checkpoints").mkdir(parents=True)
  _write(tmp, "w/student.npz", b"", "wb")
  return ["generate", "--checkpoint", "w/student.npz", "--out", "a.wav"]


@case("student-truncated")
def _(tmp):
  path = _student_like(tmp, "student.npz")
  path.write_bytes(path.read_bytes()[:600])
  return ["generate", "--checkpoint", "student.npz", "--out", "a.wav"]


@case("student-bit-flipped")
def _(tmp):
  path = _student_like(tmp, "student.npz")
  data = bytearray(path.read_bytes())
  at = data.index(b"\x5a" * 64) + 100
  data[at] ^= 0x01
  path.write_bytes(bytes(data))
  return ["serve", "--checkpoint", "student.npz", "--port", "0"]


def _unreadable_checkpoint_3(tmp):
  """A workdir whose one checkpoint (step 3) has lost its data."""
  from mrt_distill.distill import config_io
  _checkpoint_at_step_3(tmp, config_io.load_config("reference_cpu:tiny"))
  for f in (tmp / "w" / "checkpoints" / "3" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"")


@case("student-no-readable-checkpoint", error=_student_error)
def _(tmp):
  _unreadable_checkpoint_3(tmp)
  return _load_student("w")


@case("student-config-json-damaged", error=_student_error)
def _(tmp):
  _write(tmp, "w/config.json", '{"world": "random-ti')
  (tmp / "w" / "checkpoints").mkdir()
  return _load_student("w")


@case("student-not-a-workdir", error=_student_error)
def _(tmp):
  _write(tmp, "renders/a.wav", "audio")
  return _load_student("renders")


# orbax's CheckpointManager (serve/bundle.py) creates w/checkpoints/.
@case("student-no-checkpoint", error=_student_error,
      new_dirs=("w/checkpoints",))
def _(tmp):
  from mrt_distill.distill import config_io
  _write(tmp, "w/config.json",
         config_io.load_config("reference_cpu:tiny").to_json())
  return _load_student("w")


@case("student-other-geometry", error=_student_error, slow=True)
def _(tmp):
  """A student trained with LoRA rank 4 whose file says rank 2 (what a
  student of another geometry or teacher looks like to the loader)."""
  import jax
  from mrt_distill.distill import config_io, loop, student as S
  from mrt_distill.serve import bundle
  from mrt_distill.teacher.load import load_teacher_config
  cfg = config_io.load_config("reference_cpu:tiny")
  other = config_io.load_config("reference_cpu:tiny")
  other.student.lora_rank = 4
  scfg = loop.student_config(other, load_teacher_config("tiny"))
  shapes = jax.eval_shape(lambda k: S.init_student_params(scfg, k),
                          jax.random.PRNGKey(0))
  trainable, _ = S.split_params(shapes)
  bundle.export_student(cfg, jax.tree.map(
      lambda s: np.zeros(s.shape, s.dtype), trainable), tmp / "student.npz")
  return _load_student("student.npz")


# Sizes and folders of generate / serve / eval.
@case("generate-seconds-too-long")
def _(tmp):
  return ["generate", "--checkpoint", "random-tiny", "--seconds", "1e9",
          "--out", "a.wav"]


case("generate-unknown-word")(lambda tmp: [
    "generate", "--prompt", "funk:1, flutte:0.5", "--out", "a.wav"])
case("stream-unknown-word")(lambda tmp: [
    "teacher-stream", "--prompt", "techno:1, flutte:0.5", "--out", "a.wav"])
case("serve-unknown-word")(lambda tmp: ["serve", "--prompt", "technoo"])
SERVE = ("serve", "--checkpoint", "random-tiny")
case("serve-port")(lambda tmp: [*SERVE, "--port", "70000"])
case("serve-lead-chunks")(lambda tmp: [*SERVE, "--lead-chunks", "100"])
case("serve-max-clients")(lambda tmp: [*SERVE, "--max-clients", "0"])
case("serve-negative-cfg")(lambda tmp: [*SERVE, "--cfg", "-1"])
case("eval-minutes-too-long")(lambda tmp: [
    "eval", "--checkpoint", "random-tiny", "--minutes", "1000"])


@case("eval-out-not-ours")
def _(tmp):
  _write(tmp, "mine/notes.txt", "my notes\n")
  return ["eval", "--checkpoint", "random-tiny", "--out", "mine"]


# Audio (Python API: no command reads an audio file).
_WORLD = {}


def _reference(part: str):
  from mrt_distill.world.runtime import assets
  if part not in _WORLD:
    _WORLD[part] = (assets.load_codec() if part == "codec"
                    else assets.load_style_model())
  return _WORLD[part]


def _wav(tmp, rate, seconds=0.5, channels=1):
  import soundfile as sf
  t = np.arange(int(rate * seconds)) / rate
  x = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None].repeat(channels, axis=1)
  sf.write(tmp / "take.wav", x, rate)
  return tmp / "take.wav"


@case("audio-sample-rate", error=_value_error)
def _(tmp):
  import soundfile as sf
  audio, rate = sf.read(_wav(tmp, 44100), always_2d=True)
  return lambda: _reference("codec").encode(audio, rate)


@case("audio-integer-pcm", error=_value_error)
def _(tmp):
  import soundfile as sf
  audio, rate = sf.read(_wav(tmp, 16000), dtype="int16", always_2d=True)
  return lambda: _reference("codec").encode(audio, rate)


@case("audio-one-dimensional", error=_value_error)
def _(tmp):
  import soundfile as sf
  audio, rate = sf.read(_wav(tmp, 16000))
  return lambda: _reference("codec").encode(audio, rate)


@case("audio-channels-first", error=_value_error)
def _(tmp):
  import soundfile as sf
  audio, rate = sf.read(_wav(tmp, 16000, channels=2), always_2d=True)
  return lambda: _reference("codec").encode(audio.T, rate)


@case("audio-nan", error=_value_error)
def _(tmp):
  import soundfile as sf
  audio, rate = sf.read(_wav(tmp, 16000), always_2d=True)
  audio[100] = np.nan
  return lambda: _reference("codec").encode(audio, rate)


@case("style-audio-sample-rate", error=_value_error)
def _(tmp):
  import soundfile as sf
  audio, rate = sf.read(_wav(tmp, 48000), always_2d=True)
  return lambda: _reference("style").embed_audio(audio, rate, resample=False)


def _server_error():
  from mrt_distill.serve.protocol import ProtocolError
  return ProtocolError


def _server_case(row_id, message):
  @case(row_id, error=_server_error)
  def _(tmp):
    from mrt_distill.serve.protocol import parse_message
    return lambda: parse_message(message)


for _row, _message in (
    ("server-binary", b"\x00\x01"),
    ("server-not-json", "{nope"),
    ("server-unknown-type", '{"type": "volume"}'),
    ("server-oversized", '{"type": "cfg", "value": 1}' + " " * 69999),
    ("server-negative-weight",
     '{"type": "prompt", "prompts": [{"text": "techno", "weight": -1}]}'),
    ("server-nan-cfg", '{"type": "cfg", "value": NaN}'),
    ("server-fractional-steps", '{"type": "steps", "value": 1.5}')):
  _server_case(_row, _message)


# ---- the tests ------------------------------------------------------------------------
def test_every_documented_row_has_a_case():
  assert len(ROWS) >= 20
  assert sorted(ROWS) == sorted(CASES), (
      f"rows without a case: {sorted(set(ROWS) - set(CASES))}; cases "
      f"without a row: {sorted(set(CASES) - set(ROWS))}")


def _params():
  return [pytest.param(row_id, id=row_id, marks=[pytest.mark.slow]
                       if CASES[row_id].slow else [])
          for row_id in sorted(CASES)]


def _assert_in_order(text: str, fragments: tuple[str, ...]):
  pos = 0
  for frag in fragments:
    found = text.find(frag, pos)
    assert found >= 0, f"{frag!r} not in (after char {pos}):\n{text}"
    pos = found + len(frag)


@pytest.mark.parametrize("row_id", _params())
def test_bad_input(row_id, tmp_path, monkeypatch, capsys):
  row, c = ROWS[row_id], CASES[row_id]
  monkeypatch.chdir(tmp_path)
  action = c.setup(tmp_path)
  if row_id.startswith("asset-"):  # the world reads the copy
    from mrt_distill.world.runtime import assets
    monkeypatch.setattr(assets, "ASSET_DIR", tmp_path / "assets")
  before = files(tmp_path)
  try:
    seen = _run_row(action, c, capsys)
    after = files(tmp_path)
  finally:
    while _CLEANUP:
      _CLEANUP.pop()()
  _assert_in_order(seen, row.fragments)
  for d in c.new_dirs:
    if after.get(d) == "<dir>" and d not in before:
      del after[d]
  assert after == before, "a user file was changed, lost or added"


def _run_row(action, c, capsys) -> str:
  if isinstance(action, list):
    try:
      rc = cli_main.main(action)
    except SystemExit as e:  # argparse
      rc = e.code
    seen = capsys.readouterr().err
    assert rc not in (0, None), seen
    assert "Traceback" not in seen
  else:
    with pytest.raises(c.error()) as info:
      action()
    seen = str(info.value)
  return seen

