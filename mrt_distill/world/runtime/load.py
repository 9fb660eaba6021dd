"""`load_world(config)`: the one place that knows which worlds there are.

  reference    the weights shipped in the package (`assets`): the trained
               codec, style model, judge and pretrained small teacher.
  random-tiny  a randomly initialised tiny teacher (seeded by config.seed)
               with the minimal codec and style model of its geometry; it
               makes noise (tests and smoke runs).
  magenta_rt   the real Magenta RT v1 teacher, SpectroStream and MusicCoCa
               (`magenta_rt`, config.magenta_rt; docs/real_magenta_rt.md).

`config` is a run config (ConfigDict or dict: its world, seed and
magenta_rt group) or a world name. Besides `load_world`, what can be told
of a world without loading it lives here too, for the checks and plans that
must not wait for the weights: `teacher_identity`, `teacher_config`,
`plan_codec`, `early_style_vocab`.
"""

from __future__ import annotations

from mrt_distill.world.runtime.world import World

WORLDS = ("reference", "random-tiny", "magenta_rt")
# The worlds that a mistyped name is pointed to (magenta_rt needs assets
# that few have; its own error says how to get them).
_SUGGESTED = ("reference", "random-tiny")
# The teacher architecture (gin name) of the worlds whose teacher is fixed.
_TEACHER_GIN = {"reference": "reference", "random-tiny": "tiny"}
# The worlds of the reference world's procedural music (`World.procedural`).
_PROCEDURAL = ("reference", "random-tiny")


def _as_config(config):
  """A world name -> a config holding just it (seed 0)."""
  if isinstance(config, str):
    return {"world": config, "seed": 0}
  return config


def world_name(config) -> str:
  """config.world, checked.

  Raises:
    ValueError: not a world this package has (names the ones to use).
  """
  name = _as_config(config).get("world")
  if name not in WORLDS:
    raise ValueError(f"world {name!r} is not supported: use one of "
                     f"{list(_SUGGESTED)}")
  return name


def teacher_identity(config) -> str:
  """Which teacher a student is distilled from, without loading it: its
  LoRA factors only mean something on those base weights. reference: the
  shipped teacher.npz's recorded sha256 (first 16 hex digits); random-tiny:
  the init seed; magenta_rt: the teacher checkpoint's path."""
  config = _as_config(config)
  name = world_name(config)
  if name == "reference":
    from mrt_distill.world.runtime import assets
    sha = assets.recorded_sha256("teacher")
    return f"reference teacher.npz sha256 {sha[:16]}"
  if name == "random-tiny":
    return f"random-tiny seed {int(config.get('seed', 0))}"
  mrt = config.get("magenta_rt")
  return f"magenta_rt {mrt.get('teacher') if mrt else None}"


def teacher_config(config):
  """The teacher architecture (`TeacherConfig`) of a world, without its
  weights (plans are made from it)."""
  from mrt_distill.teacher.load import load_teacher_config
  config = _as_config(config)
  name = config.get("world")
  if name == "magenta_rt":
    return load_teacher_config(config["magenta_rt"]["gin"])
  if name not in _TEACHER_GIN:
    raise ValueError(f"world {name!r} has no known teacher architecture; "
                     f"known: {sorted(_TEACHER_GIN) + ['magenta_rt']}")
  return load_teacher_config(_TEACHER_GIN[name])


def plan_codec(config, geometry):
  """-> (codec, note or None): the codec a memory plan decodes through.
  The reference world's is its trained one, random-tiny's the minimal one.
  Planning Magenta RT does not load SpectroStream (its SavedModels need
  TensorFlow and are not needed to plan): the linear MinimalCodec stands in,
  and the note says so."""
  name = _as_config(config).get("world")
  if name == "reference":
    from mrt_distill.world.runtime import assets
    return assets.load_codec(), None
  from mrt_distill.codec.base import MinimalCodec
  note = None
  if name == "magenta_rt":
    note = ("codec: the plan does not load SpectroStream; the audio losses "
            "are planned through the linear stand-in codec (the real "
            "decoder's activations are not counted)")
  return MinimalCodec(geometry), note


def early_style_vocab(name: str | None) -> tuple[str, ...] | None:
  """The style vocabulary of world `name`, read in milliseconds from the
  reference style model's checksum sidecar, so a misspelt prompt is refused
  before anything loads; None for other worlds, or when it cannot be read
  (the loader then names what is wrong)."""
  if name != "reference":
    return None
  from mrt_distill.world.runtime import assets
  return assets.style_vocab()


def _reference_music() -> dict:
  """The world section of the build recipe beside the reference weights
  (`tools/build_reference_world.py` writes build_recipe.json); {} for
  weights built before the recipe was recorded."""
  import json
  from mrt_distill.world.runtime import assets
  path = assets.ASSET_DIR / "build_recipe.json"
  if not path.exists():
    return {}
  try:
    return dict(json.loads(path.read_text()).get("world") or {})
  except (OSError, ValueError, AttributeError) as e:
    raise ValueError(f"{path} cannot be read ({type(e).__name__}: {e}); "
                     f"it records how the reference world's music was "
                     f"made: restore it from the build folder") from None


def load_world(config, with_judge: bool = False) -> World:
  """Builds the world `config` names (see the module docstring).

  Args:
    config: a run config (its world, seed, magenta_rt) or a world name.
    with_judge: also load the world's style judge (reference, random-tiny;
      magenta_rt has none).

  Raises:
    ValueError: an unknown world, or magenta_rt settings missing.
    MissingAssetError: a reference-world weights file is not built (names
      the command that builds it).
    and what `magenta_rt.load_magenta_rt_world` raises.
  """
  config = _as_config(config)
  name = world_name(config)
  if name == "reference":
    from mrt_distill.geometry import REFERENCE
    from mrt_distill.world.runtime import assets
    params, cfg = assets.load_teacher()
    parts = (REFERENCE, assets.load_codec(), assets.load_style_model(),
             params, cfg)
  elif name == "random-tiny":
    import jax

    from mrt_distill.codec.base import MinimalCodec
    from mrt_distill.style.base import MinimalStyleModel
    from mrt_distill.teacher.load import load_teacher_config
    from mrt_distill.teacher.model import init_params
    cfg = load_teacher_config("tiny")
    g = cfg.geometry
    params = init_params(cfg, jax.random.PRNGKey(int(config.get("seed", 0))))
    parts = (g, MinimalCodec(g), MinimalStyleModel(g), params, cfg)
  else:  # magenta_rt: the real teacher, SpectroStream and MusicCoCa
    from mrt_distill.world.runtime.magenta_rt import load_magenta_rt_world
    params, cfg, codec, style = load_magenta_rt_world(config.get("magenta_rt"))
    parts = (cfg.geometry, codec, style, params, cfg)
  # After the load: a teacher that is missing is named by its loader.
  world = World(name, *parts, teacher_identity=teacher_identity(config),
                procedural=name in _PROCEDURAL,
                bar_grid_hz=(_reference_music().get("bar_grid_hz")
                             if name == "reference" else None))
  if with_judge and world.procedural:
    world.load_judge()
  return world
