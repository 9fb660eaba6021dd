"""`load_world`: the one way to a World, for every config.world."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest

from mrt_distill.checksummed import sha256_file
from mrt_distill.codec.base import MinimalCodec
from mrt_distill.codec.neural import NeuralCodec
from mrt_distill.geometry import REFERENCE, TINY
from mrt_distill.style.base import MinimalStyleModel
from mrt_distill.style.reference import ReferenceStyleModel
from mrt_distill.teacher.model import init_params
from mrt_distill.world.runtime import World, load_world, teacher_identity
from mrt_distill.world.runtime import assets
from mrt_distill.world.runtime import load as worlds
from mrt_distill.world.runtime.judges import StyleJudge


def _shapes(tree):
  return jax.tree.map(lambda x: tuple(np.shape(x)), tree)


def test_random_tiny_world():
  config = ml_collections.ConfigDict({"world": "random-tiny", "seed": 3})
  w = load_world(config)
  assert isinstance(w, World) and w.name == "random-tiny"
  assert w.geometry == TINY == w.teacher_cfg.geometry
  assert isinstance(w.codec, MinimalCodec) and w.codec.geometry == TINY
  assert isinstance(w.style_model, MinimalStyleModel)
  assert w.style_model.geometry == TINY
  assert w.procedural and w.judge is None
  assert w.teacher_identity == "random-tiny seed 3" == teacher_identity(config)
  # The teacher is the tiny architecture, initialised from config.seed.
  want = init_params(w.teacher_cfg, jax.random.PRNGKey(3))
  assert _shapes(w.teacher_params) == _shapes(want)
  jax.tree.map(np.testing.assert_array_equal, w.teacher_params, want)
  other = load_world({"world": "random-tiny", "seed": 4})
  assert other.teacher_identity == "random-tiny seed 4"
  assert not all(jax.tree.leaves(jax.tree.map(
      np.array_equal, other.teacher_params, w.teacher_params)))
  # What a plan reads without loading the world is this world's.
  assert worlds.teacher_config(config) == w.teacher_cfg
  assert w.teacher_system().geometry == TINY


@pytest.fixture(scope="module")
def reference():
  return load_world("reference")


def test_reference_world(reference):
  w = reference
  assert w.name == "reference" and w.procedural
  assert w.geometry == REFERENCE == w.teacher_cfg.geometry
  assert isinstance(w.codec, NeuralCodec) and w.codec.geometry == REFERENCE
  assert isinstance(w.style_model, ReferenceStyleModel)
  assert w.style_model.geometry == REFERENCE
  assert w.judge is None  # only when asked
  # The identity is the shipped teacher.npz's sha256 (the recorded one,
  # which is the file's real one), its first 16 hex digits.
  recorded = assets.recorded_sha256("teacher")
  assert recorded == sha256_file(assets.path("teacher"))
  assert w.teacher_identity == f"reference teacher.npz sha256 {recorded[:16]}"
  assert teacher_identity("reference") == w.teacher_identity
  assert worlds.teacher_config("reference") == w.teacher_cfg
  # The vocabulary told before loading is the style model's.
  assert worlds.early_style_vocab("reference") == tuple(w.style_model.vocab)
  assert worlds.early_style_vocab("random-tiny") is None
  assert w.teacher_system(temperature=0.5).geometry == REFERENCE


def test_reference_judge_only_when_asked(reference):
  w = load_world("reference", with_judge=True)
  assert isinstance(w.judge, StyleJudge)
  assert w.judge_available() and w.load_judge() is w.judge
  assert reference.judge is None
  judge = reference.load_judge()  # loaded later, then kept
  assert isinstance(judge, StyleJudge) and reference.judge is judge


def test_a_world_without_a_judge_keeps_none():
  g = TINY
  w = World("magenta_rt", g, MinimalCodec(g), MinimalStyleModel(g), None,
            None, "magenta_rt /x", procedural=False)
  assert not w.judge_available()


@pytest.mark.parametrize("config", [
    "refrence", {"world": "refrence", "seed": 0},
    ml_collections.ConfigDict({"world": "refrence", "seed": 0})])
def test_unknown_world_is_one_line(config):
  want = (r"^world 'refrence' is not supported: use one of "
          r"\['reference', 'random-tiny'\]$")
  with pytest.raises(ValueError, match=want):
    load_world(config)
  with pytest.raises(ValueError, match=want):
    teacher_identity(config)


def test_magenta_rt_without_its_settings_names_them():
  with pytest.raises(ValueError) as e:
    load_world({"world": "magenta_rt", "seed": 0})
  assert "\n" not in str(e.value)
  assert "--config.magenta_rt.teacher=DIR" in str(e.value)
  assert teacher_identity({"world": "magenta_rt",
                           "magenta_rt": {"teacher": "/t"}}) == "magenta_rt /t"


def test_reference_music_option_comes_from_the_build_recipe(tmp_path,
                                                            monkeypatch):
  from mrt_distill.world.runtime import assets
  from mrt_distill.world.runtime import load as L
  assert L._reference_music() == {}  # the shipped weights predate recipes
  monkeypatch.setattr(assets, "ASSET_DIR", tmp_path)
  (tmp_path / "build_recipe.json").write_text(
      '{"seed": 0, "world": {"bar_grid_hz": 25.0}}')
  assert L._reference_music() == {"bar_grid_hz": 25.0}
  (tmp_path / "build_recipe.json").write_text("{broken")
  with pytest.raises(ValueError, match="build_recipe.json cannot be read"):
    L._reference_music()
