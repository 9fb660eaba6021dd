"""Installing twice into one venv leaves a working install.

Without a declared build system, pip 23.2 (what a fresh Python 3.11 venv
has) took the legacy `setup.py develop` path whenever `wheel` was
importable, which ignores setup.py's package_dir mapping: after a second
`pip install -e .`, `import mrt_distill.configs` failed (issue 22).
pyproject.toml's [build-system] puts every install on the PEP 517 / 660
path. This test installs a copy of the checkout into a fresh venv with that
pip -- editable twice, then as a regular (wheel) install -- and after each
imports every subpackage and finds the configs and gin files.

Dependencies come from the test environment (a .pth file), and the build
runs without isolation (no download): only our package is installed.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

_CHECK = r"""
import importlib, json, pathlib, pkgutil, sys
import mrt_distill
names = ["mrt_distill", "mrt_distill.configs"] + [
    m.name for m in pkgutil.walk_packages(mrt_distill.__path__, "mrt_distill.")
    if m.ispkg]
failed = {}
for name in names:
  try:
    importlib.import_module(name)
  except Exception as e:
    failed[name] = f"{type(e).__name__}: {e}"
from mrt_distill.distill.config_io import load_config
from mrt_distill.teacher.load import GIN_DIR
import mrt_distill.configs as configs
print(json.dumps({
    "package": str(pathlib.Path(mrt_distill.__file__).parent),
    "configs": [str(p) for p in configs.__path__],
    "gin": sorted(p.name for p in GIN_DIR.glob("*.gin")),
    "config_name": load_config("reference_cpu").name,
    "imported": len(names), "failed": failed}))
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
  """A fresh venv (its own pip, as `python3.11 -m venv` makes it) that sees
  the test environment's packages through a .pth file."""
  root = tmp_path_factory.mktemp("venv")
  base = getattr(sys, "_base_executable", sys.executable)
  subprocess.run([base, "-m", "venv", str(root / "v")], check=True)
  py = root / "v" / "bin" / "python"
  site = subprocess.run(
      [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
       "['purelib'])"], capture_output=True, text=True, check=True
  ).stdout.strip()
  ours = sysconfig.get_paths()["purelib"]
  (pathlib.Path(site) / "outer_env.pth").write_text(ours + "\n")
  return py


@pytest.fixture(scope="module")
def src(tmp_path_factory):
  dst = tmp_path_factory.mktemp("src") / "mrt_distill"
  shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
      ".git", "build", "*.egg-info", "__pycache__", ".venv", "runs", "dist",
      "assets"))
  return dst


def _install(py, *args):
  r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps",
                      "--no-build-isolation", "--disable-pip-version-check",
                      *args], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-3000:]


def _check(py, tmp_path) -> dict:
  # Not from the checkout: its folders would shadow the install.
  r = subprocess.run([str(py), "-c", _CHECK], capture_output=True,
                     text=True, cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  assert out["failed"] == {}
  assert out["imported"] >= 10
  assert out["config_name"] == "reference_cpu"
  assert sorted(p.name for p in (ROOT / "gin").glob("*.gin")) == out["gin"]
  return out


def test_pyproject_declares_the_build_system():
  build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
  assert build["build-backend"] == "setuptools.build_meta"
  assert any(r.startswith("setuptools>=6") for r in build["requires"])


@pytest.mark.slow
def test_install_twice_then_as_a_wheel_imports_everything(venv, src,
                                                          tmp_path):
  pip = subprocess.run([str(venv), "-m", "pip", "--version"],
                       capture_output=True, text=True, check=True).stdout
  for _ in range(2):  # the README's install, run again
    _install(venv, "-e", str(src))
    out = _check(venv, tmp_path)
    assert out["package"] == str(src / "mrt_distill"), pip
    assert out["configs"] == [str(src / "configs")]
  _install(venv, str(src))  # a regular install over the editable one
  out = _check(venv, tmp_path)
  assert "site-packages" in out["package"]
  assert out["configs"][0].endswith("mrt_distill/configs")
