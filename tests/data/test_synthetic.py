"""The synthetic generator plants what it says it plants, deterministically."""
import numpy as np
import pytest

from hnt_jax.config import base_config
from hnt_jax.data import synthetic


def generate(**overrides):
  cfg = base_config().data.synthetic
  for k, v in overrides.items():
    cfg[k] = v
  return synthetic.generate(cfg)


def test_same_seed_same_data_other_seed_other_data():
  a, b, c = generate(seed=3), generate(seed=3), generate(seed=4)
  for bh in a.behaviors:
    assert (a.train[bh] != b.train[bh]).nnz == 0
    assert np.array_equal(a.truth.noise.get(bh, []), b.truth.noise.get(bh, []))
  assert (a.train["view"] != c.train["view"]).nnz > 0


def test_noise_mask_marks_exactly_the_edges_outside_interest():
  ds = generate()
  t = ds.truth
  genuine = (ds.train["buy"] + t.hesitation).tocsr()
  for b in ("view", "cart"):
    mat = ds.train[b]
    mask = t.noise[b]
    assert mask.shape == (mat.nnz,)
    rows = np.repeat(np.arange(ds.n_users), np.diff(mat.indptr))
    in_interest = np.asarray(genuine[rows, mat.indices]).ravel() > 0
    assert np.array_equal(mask, ~in_interest)
  # noise rate close to the configured one on the first auxiliary behavior (a little below it: draws that
  # hit the user's interest set or repeat are dropped)
  cfg = base_config().data.synthetic
  rate = t.noise["view"].sum() / (~t.noise["view"]).sum()
  assert 0.85 * cfg.noise_rate < rate <= cfg.noise_rate


def test_hesitations_are_touched_but_not_bought():
  ds = generate()
  h = ds.truth.hesitation
  assert h.multiply(ds.train["buy"]).nnz == 0
  assert h.multiply(ds.train["view"]).nnz == h.nnz


def test_heldout_purchases_preferentially_from_hesitations():
  ds = generate(n_users=3000, heldout_hesitation_prob=0.8)
  t = ds.truth
  share = t.test_from_hesitation.mean()
  assert 0.75 < share < 0.85
  observed = np.asarray(ds.test.multiply(t.hesitation).sum(axis=1)).ravel() > 0
  assert np.array_equal(observed, t.test_from_hesitation)
  # held-out items are never training purchases, and validation differs from test
  assert ds.test.multiply(ds.train["buy"]).nnz == 0
  assert ds.valid.multiply(ds.test).nnz == 0


def test_behavior_list_controls_auxiliaries():
  cfg = base_config().data.synthetic
  ds = synthetic.generate(cfg, ("click", "collect", "cart", "buy"))
  assert set(ds.truth.noise) == {"click", "collect", "cart"}


@pytest.mark.slow
def test_generates_millions_of_edges_quickly():
  ds = generate(n_users=100_000, n_items=20_000, purchases_per_user=8, hesitations_per_user=8)
  assert sum(m.nnz for m in ds.train.values()) > 2_000_000
