"""tools/coupling_agreement.py: how often two distributions' coupled picks
agree, per coupling."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import coupling_agreement as ca  # tools/ is on pytest's path (pytest.ini)

V, D = 16, 8


def _books():
  from mrt_distill import coupling
  rng = np.random.default_rng(0)
  return coupling.flow_codebooks(rng.normal(size=(1, V, D)), 1)[0]


def _logp(rows):
  p = np.asarray(rows, np.float64)
  return np.log(np.maximum(p / p.sum(-1, keepdims=True), 1e-30))


def test_equal_distributions_always_agree_and_disjoint_ones_never():
  """p = q: every coupling picks the same code on every draw (1, 1, 1);
  disjoint supports: never (0, 0, 0). Caught: the two picks drawing
  different noise, or TV without its 1/2."""
  rng = np.random.default_rng(1)
  p = _logp(rng.dirichlet(np.ones(V), 6))
  same = ca.agreement(p, p, _books(), jax.random.PRNGKey(0), 64)
  assert {k: float(v) for k, v in same.items()} == pytest.approx(
      {"flow": 1.0, "gumbel": 1.0, "maximal": 1.0}, abs=1e-6)
  a = np.zeros((6, V)); a[:, :8] = 1
  b = np.zeros((6, V)); b[:, 8:] = 1
  apart = ca.agreement(_logp(a), _logp(b), _books(), jax.random.PRNGKey(0),
                       64)
  assert {k: float(v) for k, v in apart.items()} == pytest.approx(
      {"flow": 0.0, "gumbel": 0.0, "maximal": 0.0}, abs=1e-6)


def test_half_overlap_gives_the_known_agreements():
  """p = (1/2, 1/2, 0, ...) and q = (1/2, 0, 1/2, ...): TV = 1/2, so at
  most half the draws can agree (maximal 0.5); Gumbel-max agrees only when
  code 0's Gumbel beats both others', 1/3 of draws. The flow map, like any
  coupling, stays at or below 0.5. Caught: Gumbel noise not shared, or the
  maximal coupling computed as 1 - 2 TV."""
  a = np.zeros((8, V)); a[:, [0, 1]] = 1
  b = np.zeros((8, V)); b[:, [0, 2]] = 1
  r = ca.agreement(_logp(a), _logp(b), _books(), jax.random.PRNGKey(3), 2000)
  assert float(r["maximal"]) == pytest.approx(0.5, abs=1e-6)
  # 16000 draws: the standard error of a share near 1/3 is 0.004.
  assert float(r["gumbel"]) == pytest.approx(1 / 3, abs=0.015)
  assert 0.0 < float(r["flow"]) <= 0.5 + 0.015


def test_maximal_agreement_is_one_minus_total_variation_per_row():
  """Per row, over any leading shape: p = (0.7, 0.3), q = (0.4, 0.6) share
  min(p, q) = 0.4 + 0.3 = 0.7; equal rows share 1."""
  p = _logp([[0.7, 0.3], [0.5, 0.5]])[None]
  q = _logp([[0.4, 0.6], [0.5, 0.5]])[None]
  np.testing.assert_allclose(np.asarray(ca.maximal_agreement(p, q)),
                             [[0.7, 1.0]], atol=1e-6)
