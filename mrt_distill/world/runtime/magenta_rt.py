"""The Magenta RT v1 world: the real teacher, SpectroStream and MusicCoCa.

`load_magenta_rt_world(config.magenta_rt)` loads its teacher, codec and
style model; `load.load_world` (--config.world=magenta_rt) makes them a
`World` like the shipped reference world's, so distillation, serving and
evaluation run unchanged on it. The config group (configs/mrt_base_v5e.py):

  gin            teacher architecture, "base" / "large" / a .gin path
                 ("" = the one named in the teacher's teacher.json)
  teacher        a teacher checkpoint written by `mrt-distill import-t5x`
  spectrostream  savedmodels/ssv2_48k_stereo (or the asset root above it)
  musiccoca      the asset root holding savedmodels/ and vocabularies/

Every file is checked before anything is loaded (the teacher is 1.3 GB), and
the teacher's geometry must agree with SpectroStream's and MusicCoCa's, which
are fixed by their files: 48 kHz stereo, 25 Hz frames, 64 x 1024 x 256 RVQ;
768-dim style, 12 x 1024 RVQ. The recipe: docs/real_magenta_rt.md.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Mapping

from mrt_distill.geometry import MRT_V1
from mrt_distill.geometry import Geometry
from mrt_distill.geometry import GeometryError

log = logging.getLogger(__name__)

KEYS = ("gin", "teacher", "spectrostream", "musiccoca")
# The geometry fields the SpectroStream and MusicCoCa files fix.
CODEC_FIELDS = ("sample_rate", "channels", "frame_rate", "codec_rvq_depth",
                "codebook_size", "codec_latent_dim")
STYLE_FIELDS = ("style_embed_dim", "style_rvq_depth", "style_codebook_size")

_NEEDS = (
    "world 'magenta_rt' needs the real Magenta RT assets (a teacher imported "
    "with `mrt-distill import-t5x`, SpectroStream, MusicCoCa)")
_ALTERNATIVE = ("or distil the shipped reference world "
                "(configs/reference_cpu.py)")


def _settings(cfg) -> dict:
  """config.magenta_rt (ConfigDict, dict or None) -> {key: str}."""
  if cfg is None:
    cfg = {}
  if not isinstance(cfg, Mapping) and not hasattr(cfg, "get"):
    raise TypeError(f"config.magenta_rt must be a group of {list(KEYS)}, got "
                    f"{type(cfg).__name__}")
  return {k: str(cfg.get(k, "") or "") for k in KEYS}


def check_geometry(geometry: Geometry, what: str) -> None:
  """Raises GeometryError when `geometry` disagrees with the fixed fields of
  SpectroStream and MusicCoCa (those of mrt_v1)."""
  diff = geometry.differences(MRT_V1, fields=CODEC_FIELDS + STYLE_FIELDS)
  if diff:
    raise GeometryError(
        f"{what} uses geometry {geometry.name!r}, which does not fit "
        f"SpectroStream and MusicCoCa ({'; '.join(diff)}; theirs on the "
        f"right): the Magenta RT world needs a teacher at geometry 'mrt_v1', "
        f"imported with `mrt-distill import-t5x SRC DST --gin base` (or "
        f"large)")


def _check_teacher_gin(teacher: str, gin: str) -> None:
  """A clear error when the config's gin is not the one the teacher was
  imported with (base vs large), before the parameter-by-parameter one."""
  from mrt_distill.teacher.load import TeacherLoadError
  from mrt_distill.teacher.load import resolve_gin

  meta_path = pathlib.Path(teacher).expanduser() / "teacher.json"
  try:
    recorded = json.loads(meta_path.read_text()).get("gin")
    same = resolve_gin(recorded).resolve() == resolve_gin(gin).resolve()
  except (OSError, ValueError, TypeError, AttributeError):
    return  # load_teacher names whatever is wrong with the checkpoint.
  if not same:
    raise TeacherLoadError(
        f"the teacher at {teacher} was imported with gin {recorded!r}, but "
        f"--config.magenta_rt.gin={gin!r}: use the config of that size "
        f"(configs/mrt_large_*.py for large), set --config.magenta_rt.gin="
        f"{recorded!r}, or leave it empty to use the teacher's own")


def load_magenta_rt_world(cfg, *, tokenizer: str = "auto"):
  """Loads the Magenta RT v1 teacher, SpectroStream and MusicCoCa.

  Args:
    cfg: `config.magenta_rt`: gin, teacher, spectrostream, musiccoca (see
      the module docstring); None when the config has no such group.
    tokenizer: SpectroStream tokenisation ("auto", "numpy", "savedmodel").

  Returns:
    (teacher params, TeacherConfig, SpectroStream codec, MusicCoCa style
    model); the geometry is the teacher config's.

  Raises:
    ValueError: a setting is missing (names the --config flag).
    MissingMagentaRTAssetError: a file is missing (named, with the fix).
    TeacherLoadError: the teacher checkpoint is missing or does not fit.
    GeometryError: the teacher's geometry does not fit the codec / style.
    InteropDependencyError: TensorFlow / tf2jax / sentencepiece missing.
  """
  from mrt_distill.codec.spectrostream import check_spectrostream_files
  from mrt_distill.codec.spectrostream import load_spectrostream
  from mrt_distill.style.musiccoca import check_musiccoca_files
  from mrt_distill.style.musiccoca import load_musiccoca
  from mrt_distill.teacher.load import load_teacher
  from mrt_distill.teacher.load import load_teacher_config

  s = _settings(cfg)
  unset = [k for k in ("teacher", "spectrostream", "musiccoca") if not s[k]]
  if unset:
    flags = " ".join(f"--config.magenta_rt.{k}=DIR" for k in unset)
    raise ValueError(
        f"{_NEEDS}: set {flags} (configs/mrt_base_v5e.py; the recipe is "
        f"docs/real_magenta_rt.md), {_ALTERNATIVE}")
  # Cheap file checks first: a typo should not cost a 1.3 GB teacher load.
  check_spectrostream_files(s["spectrostream"])
  check_musiccoca_files(s["musiccoca"])
  want_cfg = None
  if s["gin"]:
    want_cfg = load_teacher_config(s["gin"])
    check_geometry(want_cfg.geometry, f"teacher config {s['gin']!r}")
    _check_teacher_gin(s["teacher"], s["gin"])
  params, teacher_cfg = load_teacher(s["teacher"], want_cfg)
  g = teacher_cfg.geometry
  check_geometry(g, f"the teacher at {s['teacher']}")
  codec = load_spectrostream(s["spectrostream"], g, tokenizer=tokenizer)
  style = load_musiccoca(s["musiccoca"], g)
  log.info("Magenta RT world: teacher %s (%s, geometry %s), SpectroStream "
           "%s (tokeniser %s), MusicCoCa %s", s["teacher"], teacher_cfg.name,
           g.name, s["spectrostream"], codec.tokenizer, s["musiccoca"])
  return params, teacher_cfg, codec, style
