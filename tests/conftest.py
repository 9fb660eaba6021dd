"""Test-wide JAX settings (STYLE.md §12): silent rank promotion is an error."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")


import pytest


@pytest.fixture
def strict_ranks():
  """Kept for tests that name it: rank promotion is 'raise' suite-wide."""
  with jax.numpy_rank_promotion("raise"):
    yield
