"""BPR sampling: every positive once per epoch, negatives exact and uniform, reproducible from the key."""
import jax
import numpy as np
import scipy.sparse as sp

from hnt_jax.graph import behavior_graph
from hnt_jax.train.sampler import make_sampler, sample_epoch


def sampler_for(dense, batch):
  g = behavior_graph(sp.csr_matrix(dense))
  return make_sampler(g, dense.shape[1], batch)


def test_epoch_covers_every_positive_and_negatives_are_exact():
  rng = np.random.default_rng(0)
  dense = (rng.random((30, 12)) < 0.5).astype(np.float32)  # dense rows: many collisions to redraw
  s = sampler_for(dense, 64)
  out = jax.device_get(sample_epoch(s, jax.random.PRNGKey(0)))
  n = int(dense.sum())
  assert out["users"].shape == (s.steps, 64) and s.steps * 64 >= n
  pairs = set(zip(out["users"].ravel()[:n].tolist(), out["pos"].ravel()[:n].tolist()))
  assert pairs == set(zip(*np.nonzero(dense)))
  assert (dense[out["users"], out["pos"]] == 1).all()
  assert (dense[out["users"], out["neg"]] == 0).all()


def test_negatives_are_uniform_over_allowed_items():
  dense = np.zeros((1, 10), np.float32)
  dense[0, :5] = 1  # items 5..9 allowed
  s = sampler_for(np.repeat(dense, 200, axis=0), 1000)
  counts = np.zeros(10)
  for e in range(5):
    neg = np.asarray(sample_epoch(s, jax.random.PRNGKey(e))["neg"]).ravel()
    counts += np.bincount(neg, minlength=10)
  assert counts[:5].sum() == 0
  share = counts[5:] / counts.sum()
  assert np.all(np.abs(share - 0.2) < 0.02)


def test_same_key_same_epoch():
  dense = (np.random.default_rng(1).random((20, 15)) < 0.3).astype(np.float32)
  s = sampler_for(dense, 16)
  a = jax.device_get(sample_epoch(s, jax.random.PRNGKey(7)))
  b = jax.device_get(sample_epoch(s, jax.random.PRNGKey(7)))
  c = jax.device_get(sample_epoch(s, jax.random.PRNGKey(8)))
  assert all(np.array_equal(a[k], b[k]) for k in a)
  assert not np.array_equal(a["users"], c["users"])
