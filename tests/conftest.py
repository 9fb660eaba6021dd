"""Test-wide JAX settings (STYLE.md §12): silent rank promotion is an error."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")


import pytest


@pytest.fixture
def strict_ranks():
  """Kept for tests that name it: rank promotion is 'raise' suite-wide."""
  with jax.numpy_rank_promotion("raise"):
    yield


# ---- headless Chromium (Debian's /usr/bin/chromium, never a downloaded one) --
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google on a
# machine with no route out; autoplay lets the worklet start without a click.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-quic", "--no-first-run",
                 "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--no-proxy-server",
                 "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="session")
def chromium():
  """-> (sync_playwright, executable path, launch args) for Debian's
  headless Chromium. Skips when the browser is not installed, except under
  CI (`.ci/run` installs it), where it fails."""
  import os
  import pathlib

  from playwright.sync_api import sync_playwright  # in the [test] extra
  if not pathlib.Path(CHROMIUM).exists():
    msg = f"browser test needs {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI"):
      pytest.fail(msg + "; CI must provide it")
    pytest.skip(msg)
  return sync_playwright, CHROMIUM, CHROMIUM_ARGS
