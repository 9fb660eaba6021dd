"""The wheel a researcher installs on a Cloud TPU VM (`tools/tpu/tpu.py
install --wheel`) holds everything the package reads at run time: the
configs, the teacher gin files, the reference world's weights and the web
player -- and, imported from the wheel alone, finds them."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  out = tmp_path_factory.mktemp("wheel")
  # A clean copy: setuptools reuses a source tree's build/ folder, whose
  # stale files would hide what setup.py really packages (and the build
  # must not write into the checkout).
  src = tmp_path_factory.mktemp("src") / "mrt_distill"
  shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
      ".git", "build", "*.egg-info", "__pycache__", ".venv", "runs", "dist"))
  # No build isolation: the test environment's setuptools, no download.
  subprocess.run([sys.executable, "-m", "pip", "wheel", str(src),
                  "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
                 check=True, cwd=src)
  (whl,) = out.glob("mrt_distill-*.whl")
  return whl


def test_wheel_ships_configs_gin_assets_and_web_player(wheel):
  names = set(zipfile.ZipFile(wheel).namelist())
  for gin in (ROOT / "gin").glob("*.gin"):
    assert f"mrt_distill/gin/{gin.name}" in names
  for cfg in (ROOT / "configs").glob("*.py"):
    assert f"mrt_distill/configs/{cfg.name}" in names
  for asset in (ROOT / "mrt_distill" / "assets" / "reference").iterdir():
    assert f"mrt_distill/assets/reference/{asset.name}" in names
  for web in (ROOT / "mrt_distill" / "serve" / "web").iterdir():
    assert f"mrt_distill/serve/web/{web.name}" in names
  assert not any("__pycache__" in n or n.startswith("tests/") for n in names)


def test_package_from_the_wheel_alone_finds_its_gin_and_configs(wheel,
                                                                 tmp_path):
  site = tmp_path / "site"
  zipfile.ZipFile(wheel).extractall(site)
  code = (
      "import mrt_distill, pathlib\n"
      "from mrt_distill.teacher.load import GIN_DIR, load_teacher_config\n"
      "from mrt_distill.distill.config_io import load_config\n"
      "from mrt_distill.world.runtime import assets\n"
      "print(pathlib.Path(mrt_distill.__file__).parent)\n"
      "print(GIN_DIR)\n"
      "print(load_teacher_config('reference').geometry.name)\n"
      "print(load_config('reference_cpu').world)\n"
      "print(assets.path('teacher').is_file())\n")
  env = {k: v for k, v in os.environ.items()
         if k not in ("MRT_DISTILL_GIN_DIR", "MRT_DISTILL_ASSETS")}
  env["PYTHONPATH"] = str(site)
  out = subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                       env=env, capture_output=True, text=True).stdout.split()
  pkg = pathlib.Path(out[0])
  assert pkg == site / "mrt_distill"  # the wheel's copy, not the checkout
  assert pathlib.Path(out[1]) == pkg / "gin"
  assert out[2:] == ["reference", "reference", "True"]
