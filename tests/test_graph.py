"""Every sparse graph product equals a dense NumPy reference, including nodes without edges."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from hnt_jax import graph
from hnt_jax.config import base_config
from hnt_jax.data import synthetic
from hnt_jax.errors import ConfigError
from hnt_jax.signals import weak_signals


def random_matrix(rng, m, n, density):
  dense = (rng.random((m, n)) < density).astype(np.float32)
  dense[0, :] = 0  # a user without edges
  dense[:, -1] = 0  # an item without edges
  return dense


def dense_normalized(dense):
  m, n = dense.shape
  a = np.zeros((m + n, m + n))
  a[:m, m:] = dense
  a[m:, :m] = dense.T
  deg = a.sum(1)
  inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0)
  return inv[:, None] * a * inv[None, :]


@pytest.mark.parametrize("seed,m,n,density", [(0, 7, 5, 0.4), (1, 20, 30, 0.1), (2, 3, 9, 0.9)])
def test_normalized_adjacency_equals_dense_reference(seed, m, n, density):
  rng = np.random.default_rng(seed)
  dense = random_matrix(rng, m, n, density)
  adj = graph.normalized_adjacency(sp.csr_matrix(dense))
  ref = dense_normalized(dense)
  np.testing.assert_allclose(np.asarray(adj.todense()), ref, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(adj.todense()), np.asarray(adj.todense()).T)


@pytest.mark.parametrize("propagation", ["bcoo", "host"])
@pytest.mark.parametrize("seed,m,n,density", [(0, 7, 5, 0.4), (1, 20, 30, 0.1)])
def test_propagation_and_its_gradient_equal_dense_reference(propagation, seed, m, n, density):
  rng = np.random.default_rng(seed)
  dense = random_matrix(rng, m, n, density)
  g = graph.behavior_graph(sp.csr_matrix(dense), propagation)
  assert g.ops.name == propagation
  ref = dense_normalized(dense)
  x = rng.normal(size=(m + n, 4)).astype(np.float32)
  c = rng.normal(size=(m + n, 4)).astype(np.float32)
  f = jax.jit(lambda x: graph.propagate(g, graph.propagate(g, x)))
  np.testing.assert_allclose(np.asarray(f(jnp.asarray(x))), ref @ ref @ x, rtol=1e-5, atol=1e-6)
  grad = jax.grad(lambda x: jnp.sum(f(x) * c))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(grad), (ref @ ref).T @ c, rtol=1e-5, atol=1e-5)


def test_adjacency_indices_are_sorted_and_unique():
  rng = np.random.default_rng(0)
  adj = graph.normalized_adjacency(sp.csr_matrix(random_matrix(rng, 15, 12, 0.3)))
  idx = np.asarray(adj.indices)
  keys = idx[:, 0] * adj.shape[1] + idx[:, 1]
  assert np.all(np.diff(keys) > 0)
  assert adj.indices_sorted and adj.unique_indices


def test_incidence_follows_csr_order_and_weighted_products():
  rng = np.random.default_rng(1)
  dense = random_matrix(rng, 9, 6, 0.4)
  csr = sp.csr_matrix(dense)
  g = graph.behavior_graph(csr)
  rows = np.repeat(np.arange(9), np.diff(csr.indptr))
  assert np.array_equal(np.asarray(g.users), rows)
  assert np.array_equal(np.asarray(g.items), csr.indices)
  # per-edge weights as BCOO data: a weighted user-by-item product
  w = rng.random(csr.nnz).astype(np.float32)
  weighted = g.incidence.__class__((jnp.asarray(w), g.incidence.indices), shape=g.incidence.shape)
  x = rng.normal(size=(6, 3)).astype(np.float32)
  ref = sp.csr_matrix((w, csr.indices, csr.indptr), shape=csr.shape).toarray() @ x
  np.testing.assert_allclose(np.asarray(weighted @ jnp.asarray(x)), ref, rtol=1e-5, atol=1e-6)


def test_build_graphs_for_every_behavior_and_merged():
  ds = synthetic.generate(base_config().data.synthetic)
  g = graph.build_graphs(ds)
  assert g.behaviors == ds.behaviors
  for b in ds.behaviors:
    assert g[b].n_edges == ds.train[b].nnz
    assert g[b].adj.shape == (ds.n_users + ds.n_items,) * 2
  union = (ds.train["view"] + ds.train["cart"] + ds.train["buy"]) > 0
  assert g.merged.n_edges == union.nnz
  ref = dense_normalized(union.toarray().astype(np.float32))
  np.testing.assert_allclose(np.asarray(g.merged.adj.todense()), ref, rtol=1e-5, atol=1e-7)


def test_user_rows_padded_and_dense_equal_the_matrix():
  rng = np.random.default_rng(3)
  dense = random_matrix(rng, 11, 8, 0.35)
  rows = graph.user_rows(sp.csr_matrix(dense))
  users = jnp.asarray([0, 3, 10, 3, 5])
  got = np.asarray(rows.dense(users))
  np.testing.assert_array_equal(got, dense[np.asarray(users)])
  items, mask = rows.padded(users)
  for r, u in enumerate(np.asarray(users)):
    assert sorted(np.asarray(items[r])[np.asarray(mask[r])].tolist()) == np.flatnonzero(dense[u]).tolist()


@pytest.mark.parametrize("width", [3, 64])
def test_weak_signal_tables_follow_the_rule_per_user(width):
  """Candidates (weak-signal pairs) and the converting-pair table: per user, most auxiliary behaviors first,
  then lower item id, cut at `width`; flags equal the auxiliary matrices."""
  cfg = base_config()
  cfg.data.synthetic.update(n_users=30, n_items=40, hesitations_per_user=6)
  ds = synthetic.generate(cfg.data.synthetic)
  w = weak_signals(ds, width)
  aux = np.stack([ds.train[b].toarray() != 0 for b in ds.auxiliary], axis=-1)
  target = ds.train_target.toarray() != 0
  any_aux = aux.any(-1)
  for items, mask, flags, pairs in [(w.cand_items, w.cand_mask, w.cand_aux, any_aux & ~target),
                                    (w.conv_table_items, w.conv_table_mask, w.conv_table_aux,
                                     any_aux & target)]:
    items, mask, flags = np.asarray(items), np.asarray(mask), np.asarray(flags)
    assert items.shape[1] <= width
    for u in range(ds.n_users):
      mine = sorted(np.flatnonzero(pairs[u]), key=lambda i: (-aux[u, i].sum(), i))[:items.shape[1]]
      assert list(items[u][mask[u]]) == mine
      np.testing.assert_array_equal(flags[u][mask[u]], aux[u, mine].astype(np.float32))
  conv_pairs = np.asarray(w.conv_table_mask).sum()
  assert conv_pairs == min((any_aux & target).sum(), conv_pairs)  # nothing kept twice
  assert int(np.asarray(w.conv_users).shape[0]) == int((any_aux & target).sum())


@pytest.mark.parametrize("propagation", ["bcoo", "host"])
def test_bfloat16_propagation_rounds_input_and_output_and_returns_float32(propagation):
  rng = np.random.default_rng(7)
  dense = random_matrix(rng, 12, 9, 0.4)
  g = graph.behavior_graph(sp.csr_matrix(dense), propagation, dtype="bfloat16")
  g32 = graph.behavior_graph(sp.csr_matrix(dense), propagation)
  x = jnp.asarray(rng.normal(size=(21, 8)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(21, 8)), jnp.float32)
  f = jax.jit(lambda x: graph.propagate(g, x))
  y = f(x)
  assert y.dtype == jnp.float32
  y_np = np.asarray(y)
  np.testing.assert_array_equal(y_np, np.asarray(y.astype(jnp.bfloat16).astype(jnp.float32)))  # rounded
  bf = lambda a: np.asarray(jnp.asarray(a, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32))
  ref = dense_normalized(dense)
  np.testing.assert_allclose(y_np, ref @ bf(x), rtol=2e-2, atol=2e-2)
  assert not np.array_equal(y_np, np.asarray(graph.propagate(g32, x)))
  grad = jax.grad(lambda x: jnp.sum(f(x) * c))(x)
  assert grad.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(grad), ref.T @ np.asarray(c), rtol=3e-2, atol=3e-2)
  with pytest.raises(ConfigError, match="propagation_dtype='float16' is not one of float32, bfloat16"):
    graph.behavior_graph(sp.csr_matrix(dense), propagation, dtype="float16")
