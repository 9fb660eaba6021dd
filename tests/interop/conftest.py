"""The [interop] extra for the tests in this folder: skip without it, except
under CI (`.ci/run` installs it), where a missing package fails."""

from __future__ import annotations

import importlib
import os

import pytest

INSTALL = 'pip install -c constraints.txt -e ".[interop]"'


def require_interop(*modules: str) -> None:
  """Imports `modules`, or skips the test (fails it when CI is set)."""
  try:
    for name in modules:
      importlib.import_module(name)
  except ImportError as e:
    msg = f"this test needs the [interop] extra ({e}); {INSTALL}"
    if os.environ.get("CI"):
      pytest.fail(msg + "; CI must install it")
    pytest.skip(msg)


@pytest.fixture(scope="session", name="require_interop")
def require_interop_fixture():
  """`require_interop` for fixtures (conftest is not importable here)."""
  return require_interop
