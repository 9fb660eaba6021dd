"""Test-wide JAX settings (STYLE.md §12): silent rank promotion is an error,
and one persistent compilation cache per test session."""

import atexit
import os
import shutil
import tempfile

# Many tests build the same train step, chunk step or tiny world afresh: new
# Python closures, the same XLA program. JAX's persistent cache is keyed by
# the program, so each is compiled once per session instead of once per
# test (the three played-own-pick tests: 95 s -> 66 s wall on 2 cores,
# medians of two pairs run side by side with and without it). The folder
# is new for each session and removed at its end: every run still compiles
# everything once, and no test reads or writes the user's own cache
# (~/.cache/mrt_distill). The CLI subprocesses the tests start share it
# through MRT_DISTILL_CACHE_DIR (mrt_distill.main.enable_compilation_cache);
# tests that must compile on their own pass --no-cache.
_JAX_CACHE = tempfile.mkdtemp(prefix="mrt_distill_test_jax_cache_")
atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)
os.environ["MRT_DISTILL_CACHE_DIR"] = _JAX_CACHE

import jax  # noqa: E402  (after the cache folder is chosen)

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_compilation_cache_dir", _JAX_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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
