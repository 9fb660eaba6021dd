"""Test-wide JAX settings (STYLE.md §12): silent rank promotion is an error."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
