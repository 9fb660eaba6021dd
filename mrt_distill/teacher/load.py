"""Loading the teacher: gin architecture files, parameter checks, checkpoints.

This is the only module that reads gin (STYLE.md §4). The gin files in `gin/`
hold macros only (t5x style: `EMBED_DIM = 768`); they are parsed with gin's
own parser, so syntax errors carry gin's line numbers, and no gin binding ever
reaches code we own.

Teacher checkpoints are orbax PyTree checkpoints of the params plus a
`teacher.json` naming the gin config, so a checkpoint always says which
architecture and geometry it belongs to. `import_t5x` converts a legacy t5x
checkpoint of Magenta RT v1 (reference §6.2) into that form.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import pathlib
import tokenize

import gin.config_parser as gin_parser
import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from mrt_distill import atomic
from mrt_distill.geometry import get_geometry
from mrt_distill.teacher.config import TeacherConfig
from mrt_distill.teacher.model import abstract_params

log = logging.getLogger(__name__)

def _default_gin_dir() -> pathlib.Path:
  """The repository's gin/ (a checkout or editable install), else the copy a
  wheel installs as mrt_distill/gin (setup.py)."""
  here = pathlib.Path(__file__).resolve()
  for cand in (here.parents[2] / "gin", here.parents[1] / "gin"):
    if cand.is_dir():
      return cand
  return here.parents[2] / "gin"


GIN_DIR = pathlib.Path(os.environ.get("MRT_DISTILL_GIN_DIR",
                                      _default_gin_dir()))

# gin macro -> TeacherConfig field. NUM_DECODER_LAYERS is set in v1's gin but
# unused by the Depthformer; it is accepted and ignored, as in v1.
_MACROS = {
    "GEOMETRY": "geometry",
    "EMBED_DIM": "d_model",
    "NUM_HEADS": "num_heads",
    "HEAD_DIM": "head_dim",
    "MLP_DIM": "mlp_dim",
    "DEPTH_MLP_DIM": "depth_mlp_dim",
    "NUM_ENCODER_LAYERS": "num_encoder_layers",
    "NUM_TEMPORAL_LAYERS": "num_temporal_layers",
    "NUM_DEPTH_LAYERS": "num_depth_layers",
    "TEMPORAL_RELPOS_BUCKETS": "temporal_relpos_buckets",
    "TEMPORAL_RELPOS_MAX_DISTANCE": "temporal_relpos_max_distance",
    "DEPTH_RELPOS_BUCKETS": "depth_relpos_buckets",
    "DEPTH_RELPOS_MAX_DISTANCE": "depth_relpos_max_distance",
    "DROPOUT_RATE": "dropout_rate",
    "DEPTH_DROPOUT_RATE": "depth_dropout_rate",
    "ACTIVATION_DTYPE": "activation_dtype",
}
_IGNORED = {"NUM_DECODER_LAYERS"}


class TeacherLoadError(ValueError):
  """A gin file, checkpoint or parameter tree does not fit the teacher."""


class _Delegate(gin_parser.ParserDelegate):

  def configurable_reference(self, scoped_name, evaluate):
    raise TeacherLoadError(
        f"teacher gin files hold macros only; found a configurable reference "
        f"@{scoped_name}")

  def macro(self, name):
    return ("%", name)


def resolve_gin(name_or_path: str | os.PathLike) -> pathlib.Path:
  """'base' | 'teacher_base' | 'teacher_base.gin' | a path -> a gin file."""
  p = pathlib.Path(name_or_path)
  if p.suffix == ".gin" and p.exists():
    return p
  stem = p.name[:-4] if p.name.endswith(".gin") else p.name
  for cand in (GIN_DIR / f"{stem}.gin", GIN_DIR / f"teacher_{stem}.gin"):
    if cand.exists():
      return cand
  known = sorted(f.stem for f in GIN_DIR.glob("*.gin"))
  raise TeacherLoadError(
      f"no teacher gin file {str(name_or_path)!r}; give a path to a .gin file "
      f"or one of {known} (looked in {GIN_DIR})")


def parse_gin_macros(path: pathlib.Path, _seen=()) -> dict:
  """Macros of a gin file (and its includes), later bindings win."""
  path = pathlib.Path(path)
  if path in _seen:
    raise TeacherLoadError(f"gin include cycle through {path}")
  try:
    text = path.read_text()
  except OSError as e:
    raise TeacherLoadError(f"cannot read gin file {path}: {e}") from None
  out: dict = {}
  try:
    for st in gin_parser.ConfigParser(io.StringIO(text), _Delegate()):
      if isinstance(st, gin_parser.IncludeStatement):
        out.update(parse_gin_macros(path.parent / st.filename,
                                    _seen + (path,)))
      elif isinstance(st, gin_parser.BindingStatement):
        if st.scope or st.arg_name:
          raise TeacherLoadError(
              f"{path}:{st.location.line_num}: teacher gin files hold macros "
              f"only (NAME = value); found a binding "
              f"'{st.selector}.{st.arg_name}'")
        val = st.value
        if isinstance(val, tuple) and len(val) == 2 and val[0] == "%":
          if val[1] not in out:
            raise TeacherLoadError(
                f"{path}:{st.location.line_num}: macro %{val[1]} is used "
                f"before it is defined")
          val = out[val[1]]
        out[st.selector] = val
      else:
        raise TeacherLoadError(
            f"{path}: unsupported gin statement {type(st).__name__}")
  except SyntaxError as e:
    raise TeacherLoadError(
        f"gin file {path} does not parse: {e.msg} (line {e.lineno})") from None
  except tokenize.TokenError as e:  # e.g. an unclosed bracket
    msg, (line, _) = e.args
    raise TeacherLoadError(
        f"gin file {path} does not parse: {msg} (line {line})") from None
  return out


def load_teacher_config(name_or_path: str | os.PathLike = "base"
                        ) -> TeacherConfig:
  """Builds a TeacherConfig from a gin file in `gin/` (or any path)."""
  path = resolve_gin(name_or_path)
  macros = parse_gin_macros(path)
  unknown = sorted(set(macros) - set(_MACROS) - _IGNORED)
  if unknown:
    raise TeacherLoadError(
        f"{path}: unknown macro(s) {unknown}; known: {sorted(_MACROS)}")
  kw = {_MACROS[k]: v for k, v in macros.items() if k in _MACROS}
  missing = sorted(k for k, f in _MACROS.items() if f not in kw)
  if missing:
    raise TeacherLoadError(f"{path}: missing macro(s) {missing}")
  name = path.stem[len("teacher_"):] if path.stem.startswith(
      "teacher_") else path.stem
  try:
    kw["geometry"] = get_geometry(kw["geometry"])
    return TeacherConfig(name=name, **kw)
  except (TypeError, ValueError) as e:
    raise TeacherLoadError(f"{path}: {e}") from None


# ---- parameter trees ---------------------------------------------------------
def check_params(params, cfg: TeacherConfig, what: str = "params") -> None:
  """Raises TeacherLoadError listing missing / extra / mis-shaped names."""
  want = flatten_dict(abstract_params(cfg)[0], sep=".")
  have = flatten_dict(params, sep=".")
  missing = sorted(set(want) - set(have))
  extra = sorted(set(have) - set(want))
  shapes = sorted(
      f"{k}: {tuple(np.shape(have[k]))} != expected {tuple(want[k].shape)}"
      for k in set(want) & set(have)
      if tuple(np.shape(have[k])) != tuple(want[k].shape))
  if not (missing or extra or shapes):
    return
  lines = [f"{what} do not fit teacher config {cfg.name!r} "
           f"(geometry {cfg.geometry.name!r}, d_model {cfg.d_model}):"]
  for title, items in (("missing", missing), ("unexpected", extra),
                       ("shape mismatch", shapes)):
    if items:
      shown = items[:20] + ([f"... and {len(items) - 20} more"]
                            if len(items) > 20 else [])
      lines.append(f"  {title} ({len(items)}): " + "; ".join(shown))
  if "token_embedder.embedding" in have and shapes:
    rows = np.shape(have["token_embedder.embedding"])[0]
    if rows != cfg.vocab_rows:
      lines.append(
          f"  the embedding has {rows} rows but this geometry needs "
          f"{cfg.vocab_rows}: the checkpoint is of another geometry or size; "
          f"pick the matching gin config")
  raise TeacherLoadError("\n".join(lines))


# ---- orbax teacher checkpoints ----------------------------------------------
_META = "teacher.json"


def save_teacher(path: str | os.PathLike, params, cfg: TeacherConfig,
                 gin_name: str | None = None, extra: dict | None = None):
  """Writes params (orbax PyTree) + teacher.json into directory `path`."""
  import orbax.checkpoint as ocp

  check_params(params, cfg)
  path = pathlib.Path(path).resolve()
  path.mkdir(parents=True, exist_ok=True)
  with ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save(path / "params", jax.tree.map(np.asarray, params), force=True)
  meta = {"gin": gin_name or cfg.name,
          "config": {k: v for k, v in dataclasses.asdict(cfg).items()
                     if k != "geometry"},
          "geometry": cfg.geometry.name, **(extra or {})}
  atomic.write_text(path / _META, json.dumps(meta, indent=2))


def load_teacher(path: str | os.PathLike, cfg: TeacherConfig | None = None):
  """Reads a checkpoint written by `save_teacher` -> (params, config)."""
  import orbax.checkpoint as ocp

  path = pathlib.Path(path).resolve()
  meta_path = path / _META
  if not meta_path.exists():
    if not path.exists():
      problem = "does not exist"
    elif (path / "config.json").is_file() and (path / "checkpoints").is_dir():
      problem = ("is a `mrt-distill distill` workdir (a student, not a "
                 "teacher: play it with `mrt-distill generate --checkpoint "
                 f"{path}`)")
    else:
      problem = f"is not a teacher checkpoint (no {_META})"
    raise TeacherLoadError(
        f"{path} {problem}; write a teacher checkpoint with `mrt-distill "
        f"import-t5x` or save_teacher()")
  try:
    meta = json.loads(meta_path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise TeacherLoadError(
        f"{meta_path} is not valid JSON ({e}); re-import the teacher with "
        f"`mrt-distill import-t5x`") from None
  if cfg is None:
    cfg = load_teacher_config(meta["gin"])
  elif meta.get("geometry") != cfg.geometry.name:
    raise TeacherLoadError(
        f"checkpoint {path} is for geometry {meta.get('geometry')!r}, but the "
        f"requested teacher config uses {cfg.geometry.name!r}")
  with ocp.PyTreeCheckpointer() as ckptr:
    params = ckptr.restore(path / "params")
  check_params(params, cfg, what=f"checkpoint {path}")
  return params, cfg


def read_t5x_teacher(src: str | os.PathLike, gin: str = "base"):
  """Reads a Magenta RT v1 t5x checkpoint as teacher params, checked name by
  name, shape by shape and dtype by dtype against the gin config.

  Returns (params (float32 numpy), TeacherConfig, T5xCheckpoint).
  """
  from mrt_distill.teacher import t5x_format

  cfg = load_teacher_config(gin)
  ckpt = t5x_format.read_t5x_checkpoint(src)
  check_stored_dtypes(ckpt.dtypes, cfg, src)
  params = unflatten_dict(
      {tuple(k.split(".")): np.asarray(v, np.float32)
       for k, v in flatten_dict(ckpt.params, sep=".").items()})
  check_params(params, cfg, what=f"t5x checkpoint {src}")
  return params, cfg, ckpt


def import_t5x(src: str | os.PathLike, dst: str | os.PathLike,
               gin: str = "base") -> dict:
  """Converts a Magenta RT v1 t5x checkpoint into a teacher checkpoint.

  t5x names `target.a.b.c` are the Flax paths of this model with '.' for
  '/', and kernels are stored (in, out): the import is a re-nesting, checked
  name by name and shape by shape against the gin config.
  """
  params, cfg, ckpt = read_t5x_teacher(src, gin)
  save_teacher(dst, params, cfg, gin_name=str(gin),
               extra={"source": str(src), "step": ckpt.step})
  n = sum(int(np.size(x)) for x in jax.tree.leaves(params))
  log.info("imported %d tensors (%d parameters) from %s", len(
      jax.tree.leaves(params)), n, src)
  slots = ckpt.slots or {"tensors": 0, "bytes": 0}
  if slots["tensors"]:
    # A teacher checkpoint holds params only; continuing pretraining needs the
    # slots: read them with read_t5x_checkpoint(include_optimizer_state=True).
    log.warning(
        "import-t5x: dropped the %d optimizer (Adafactor) slot tensors of %s "
        "(%d bytes stored, %.2f MB); the teacher needs the parameters only. "
        "To continue pretraining, read them with "
        "t5x_format.read_t5x_checkpoint(src, include_optimizer_state=True).",
        slots["tensors"], src, slots["bytes"], slots["bytes"] / 1e6)
  return {"tensors": len(jax.tree.leaves(params)), "params": n,
          "step": ckpt.step, "config": cfg.name,
          "dropped_optimizer_slots": {"tensors": slots["tensors"],
                                      "bytes": slots["bytes"]}}


# Stored dtypes a float32 teacher parameter may come in: float32 (v1's), or
# a narrower float that converts to float32 exactly.
PARAM_DTYPES = ("float32", "bfloat16", "float16")


def check_stored_dtypes(dtypes: dict, cfg: TeacherConfig, src) -> None:
  """Raises TeacherLoadError naming every parameter stored in a dtype that
  does not convert exactly to the float32 parameters `cfg` expects."""
  want = flatten_dict(abstract_params(cfg)[0], sep=".")
  bad = sorted(f"{k} ({d})" for k, d in dtypes.items()
               if k in want and d not in PARAM_DTYPES)
  if bad:
    shown = "; ".join(bad[:5]) + (f"; ... and {len(bad) - 5} more"
                                  if len(bad) > 5 else "")
    raise TeacherLoadError(
        f"t5x checkpoint {src}: {len(bad)} parameter(s) stored in a dtype the "
        f"teacher config {cfg.name!r} cannot take: {shown}. Its parameters "
        f"are float32; supported stored dtypes: {', '.join(PARAM_DTYPES)} "
        "(converted exactly). The checkpoint is not this model's weights; "
        "check the source and the --gin config")


# ---- shipped (npz) teacher weights -------------------------------------------
def save_teacher_npz(path: str | os.PathLike, params, cfg: TeacherConfig,
                     gin_name: str, extra: dict | None = None,
                     float_dtype=np.float16) -> pathlib.Path:
  """Params as one checksummed .npz (float16 by default, for shipping)."""
  from mrt_distill import checksummed

  check_params(params, cfg)
  flat = flatten_dict(jax.tree.map(np.asarray, params), sep="/")
  meta = {"kind": "teacher", "gin": gin_name, "geometry": cfg.geometry.name,
          **(extra or {})}
  return checksummed.save_npz(path, flat, meta, float_dtype=float_dtype)


def load_teacher_npz(path: str | os.PathLike, rebuild_hint: str):
  """-> (params (float32), TeacherConfig) from `save_teacher_npz` output."""
  from mrt_distill import checksummed

  flat, meta = checksummed.load_npz(path, rebuild_hint)
  if meta.get("kind") != "teacher":
    raise TeacherLoadError(f"{path} holds {meta.get('kind')!r} weights, not "
                           f"a teacher")
  cfg = load_teacher_config(meta["gin"])
  params = unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
  check_params(params, cfg, what=f"teacher weights {path}")
  return params, cfg
