"""Shared fixtures: small data, PRNG keys."""

import os

os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> jax.Array:
  return jax.random.key(0)


def labelled_blobs(sizes, dim=4, centers_per_class=6, seed=0):
  """Per-class Gaussian mixtures with unequal class sizes.

  Returns:
    ``(x [n, dim] float32, y [n] int)`` with ``sizes[i]`` points of class
    ``10 * i`` (labels deliberately not 0..c-1), rows shuffled.
  """
  gen = np.random.default_rng(seed)
  xs, ys = [], []
  for i, n in enumerate(sizes):
    centers = gen.normal(0, 4, (centers_per_class, dim))
    which = gen.integers(0, centers_per_class, n)
    scale = gen.uniform(0.3, 1.2, (centers_per_class, 1))
    xs.append(centers[which] + scale[which] * gen.normal(size=(n, dim)))
    ys.append(np.full(n, 10 * i))
  x = np.concatenate(xs).astype(np.float32)
  y = np.concatenate(ys)
  perm = gen.permutation(len(y))
  return x[perm], y[perm]


@pytest.fixture
def blobs():
  return labelled_blobs((300, 200, 250))
