"""Edge influence: the gradient with respect to per-edge adjacency weights equals a dense NumPy reference."""
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from hnt_jax import graph as graph_lib
from hnt_jax.errors import ConfigError
from hnt_jax.influence import adjacency_edge_index, edge_influence
from tests.test_graph import dense_normalized, random_matrix


def test_influence_equals_dense_reference():
  rng = np.random.default_rng(3)
  dense = random_matrix(rng, 6, 7, 0.4)
  other = random_matrix(rng, 6, 7, 0.5)
  g = graph_lib.behavior_graph(sp.csr_matrix(dense), "host")  # the host path is swapped for BCOO inside
  graphs = graph_lib.Graphs(per_behavior=(graph_lib.behavior_graph(sp.csr_matrix(other)), g), merged=None,
                            weak=None, behaviors=("view", "buy"), n_users=6, n_items=7)
  x = rng.normal(size=(13, 3)).astype(np.float32)

  def loss(gs):
    h = graph_lib.propagate(gs["buy"], jnp.asarray(x))
    return jnp.sum(h ** 2)

  got = np.asarray(edge_influence(loss, graphs, "buy"))
  a = dense_normalized(dense)
  y = a @ x
  users, items = np.nonzero(dense)  # CSR order
  want = [2 * (y[u] @ (a[u, 6 + i] * x[6 + i]) + y[6 + i] @ (a[6 + i, u] * x[u])) for u, i in zip(users, items)]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # the other behavior's edges do not move this loss
  assert np.allclose(np.asarray(edge_influence(loss, graphs, "view")), 0.0)


def test_adjacency_entries_map_to_their_edges():
  dense = random_matrix(np.random.default_rng(0), 5, 4, 0.5)
  g = graph_lib.behavior_graph(sp.csr_matrix(dense))
  edge = adjacency_edge_index(g)
  idx = np.asarray(g.adj.indices)
  users, items = np.asarray(g.users), np.asarray(g.items)
  for (r, c), e in zip(idx, edge):
    u, i = (r, c - 5) if r < 5 else (c, r - 5)
    assert (users[e], items[e]) == (u, i)
  assert np.bincount(edge).tolist() == [2] * users.shape[0]  # each edge owns its two entries


def test_unknown_behavior_is_a_config_error():
  dense = random_matrix(np.random.default_rng(0), 4, 4, 0.5)
  g = graph_lib.behavior_graph(sp.csr_matrix(dense))
  graphs = graph_lib.Graphs(per_behavior=(g,), merged=None, weak=None, behaviors=("buy",), n_users=4, n_items=4)
  with pytest.raises(ConfigError, match="'cart' is not one of buy"):
    edge_influence(lambda gs: jnp.float32(0), graphs, "cart")
