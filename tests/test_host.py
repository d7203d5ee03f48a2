"""Host (SciPy / NumPy) products used on the CPU backend equal the XLA formulations and a dense NumPy
reference, gradients included, on one row block and on several blocks run in parallel threads."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from hnt_jax import host
from hnt_jax.graph import behavior_graph
from hnt_jax.models.hnt.transfer import normalize
from hnt_jax.sparse_ops import HostOps, XlaOps, edge_gates, gated_mean


@pytest.fixture(params=[False, True], ids=["one-block", "threaded-blocks"])
def blocks(request, monkeypatch):
  """Whether the host products split rows into blocks run in parallel (as on large graphs)."""
  if request.param:
    monkeypatch.setattr(host, "_MIN_SPLIT_ENTRIES", 16)
    monkeypatch.setattr(host, "host_threads", lambda: 3)
  return request.param


def random_graph(seed, m, n, density):
  rng = np.random.default_rng(seed)
  dense = (rng.random((m, n)) < density).astype(np.float32)
  dense[1] = 0  # a user without edges
  return rng, dense, behavior_graph(sp.csr_matrix(dense), "host")


@pytest.mark.parametrize("seed,m,n,density", [(0, 9, 7, 0.4), (1, 40, 30, 0.3)])
def test_gated_mean_and_gradients_equal_xla(blocks, seed, m, n, density):
  rng, dense, g = random_graph(seed + 10 * blocks, m, n, density)
  assert isinstance(g.ops, HostOps) and len(g.ops.edges.rows) == (3 if blocks else 1)
  d = 5
  phi = normalize(jnp.asarray(rng.normal(size=(n, d)), jnp.float32))
  protos = normalize(jnp.asarray(rng.normal(size=(m, d)), jnp.float32))
  emb = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  delta = jnp.float32(0.1)
  c_h = jnp.asarray(rng.normal(size=(m, d)), jnp.float32)
  c_g = jnp.asarray(rng.normal(size=(g.n_edges,)), jnp.float32)

  def on_host(phi, protos, emb, delta):
    h, gates = host.gated_mean(g.ops.edges, phi, protos, emb, delta, 0.2)
    return jnp.sum(h * c_h) + jnp.sum(gates * c_g), (h, gates)

  def in_xla(phi, protos, emb, delta):
    gates = edge_gates(g, phi, protos, delta, 0.2)
    h = gated_mean(g, gates, emb, m)
    return jnp.sum(h * c_h) + jnp.sum(gates * c_g), (h, gates)

  (v1, out1), g1 = jax.jit(jax.value_and_grad(on_host, argnums=(0, 1, 2, 3), has_aux=True))(phi, protos, emb, delta)
  (v2, out2), g2 = jax.jit(jax.value_and_grad(in_xla, argnums=(0, 1, 2, 3), has_aux=True))(phi, protos, emb, delta)
  for a, b in zip(out1 + g1, out2 + g2):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
  assert float(v1) == pytest.approx(float(v2), rel=1e-5)
  # and against a dense NumPy reference for the view
  p, q, e = (np.asarray(x) for x in (phi, protos, emb))
  w = dense / (1 + np.exp(-((q @ p.T) - 0.1) / 0.2))
  want = (w @ e) / np.maximum(w.sum(1, keepdims=True), 1e-8)
  np.testing.assert_allclose(np.asarray(out1[0]), want, rtol=1e-4, atol=1e-5)


def test_gated_mean_on_active_users_equals_every_edge(blocks):
  """With `active`, the active users' rows, the gates of their edges and every gradient of a loss that reads
  only those rows are those of the product over every edge; other rows and gates are 0."""
  rng, dense, g = random_graph(7 + 10 * blocks, 40, 30, 0.3)
  m, n, d = 40, 30, 5
  active = rng.random(m) < 0.4
  active[[1, 2]] = True, False  # an active user without edges; an inactive one with edges
  phi = normalize(jnp.asarray(rng.normal(size=(n, d)), jnp.float32))
  protos = normalize(jnp.asarray(rng.normal(size=(m, d)), jnp.float32))
  emb = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  c_h = jnp.asarray(rng.normal(size=(m, d)) * active[:, None], jnp.float32)  # reads the active rows only
  on_edge = active[np.asarray(g.users)]
  c_g = jnp.asarray(rng.normal(size=(g.n_edges,)) * on_edge, jnp.float32)

  def loss(phi, protos, emb, delta, subset):
    h, gates = host.gated_mean(g.ops.edges, phi, protos, emb, delta, 0.2, subset)
    return jnp.sum(h * c_h) + jnp.sum(gates * c_g), (h, gates)

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))
  (v_all, (h_all, g_all)), d_all = grad(phi, protos, emb, jnp.float32(0.1), None)
  (v_act, (h_act, g_act)), d_act = grad(phi, protos, emb, jnp.float32(0.1), jnp.asarray(active))
  assert float(v_act) == pytest.approx(float(v_all), rel=1e-5)
  np.testing.assert_allclose(np.asarray(h_act)[active], np.asarray(h_all)[active], rtol=1e-5, atol=1e-6)
  assert not np.asarray(h_act)[~active].any() and not np.asarray(g_act)[~on_edge].any()
  np.testing.assert_allclose(np.asarray(g_act)[on_edge], np.asarray(g_all)[on_edge], rtol=1e-5)
  for a, b in zip(d_act, d_all):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("mean", [False, True])
@pytest.mark.parametrize("seed,m,n,density", [(2, 8, 6, 0.5), (3, 40, 30, 0.3)])
def test_edge_matmul_and_gradient_equal_dense(blocks, mean, seed, m, n, density):
  rng, dense, g = random_graph(seed + 10 * blocks, m, n, density)
  assert len(g.ops.edges.rows) == (3 if blocks else 1)
  r = dense / np.maximum(dense.sum(1, keepdims=True), 1) if mean else dense
  x = rng.normal(size=(n, 3)).astype(np.float32)
  c = rng.normal(size=(m, 3)).astype(np.float32)
  f = jax.jit(lambda x: host.edge_matmul(g.ops.edges, x, mean))
  np.testing.assert_allclose(np.asarray(f(jnp.asarray(x))), r @ x, rtol=1e-5, atol=1e-5)
  grad = jax.grad(lambda x: jnp.sum(f(x) * c))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(grad), r.T @ c, rtol=1e-5, atol=1e-5)


def test_propagation_by_threaded_blocks_equals_dense(blocks):
  rng, dense, g = random_graph(5 + 10 * blocks, 30, 20, 0.3)
  assert len(g.ops.matrix.rows) == (3 if blocks else 1)
  adj = np.asarray(g.adj.todense())
  x = rng.normal(size=(50, 4)).astype(np.float32)
  c = rng.normal(size=(50, 4)).astype(np.float32)
  f = jax.jit(lambda x: host.symmetric_matmul(g.ops.matrix, x))
  np.testing.assert_allclose(np.asarray(f(jnp.asarray(x))), adj @ x, rtol=1e-5, atol=1e-6)
  grad = jax.grad(lambda x: jnp.sum(f(x) * c))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(grad), adj.T @ c, rtol=1e-5, atol=1e-6)


def test_each_graph_holds_its_own_products():
  """No registry: a graph's host products live in its `ops` (and go with it); the choice is made once."""
  _, dense, g1 = random_graph(4, 6, 5, 0.5)
  g2 = behavior_graph(sp.csr_matrix(dense), "host")
  assert g1.ops.matrix is not g2.ops.matrix and g1.ops != g2.ops
  assert not hasattr(host, "_REGISTRY")
  assert behavior_graph(sp.csr_matrix(dense), "bcoo").ops == XlaOps()


@pytest.mark.parametrize("b, c", [(5, 7), (300, 180)])  # one piece; row chunks over the host threads
def test_row_dots_and_gradients_equal_xla_and_numpy(b, c):
  rng = np.random.default_rng(b)
  n, d = 40, 64
  x = rng.normal(size=(b, d)).astype(np.float32)
  y = rng.normal(size=(n, d)).astype(np.float32)
  cols = rng.integers(0, n, (b, c)).astype(np.int32)
  cols[0, :3] = 4  # a column repeated within a row
  w = rng.normal(size=(b, c)).astype(np.float32)
  want = np.einsum("bd,bcd->bc", x.astype(np.float64), y[cols].astype(np.float64))
  # d/dx_b = Σ_c w_bc y_cols[b,c]; d/dy_j = Σ_(b,c): cols[b,c] = j w_bc x_b
  want_dx = np.einsum("bc,bcd->bd", w, y[cols].astype(np.float64))
  want_dy = np.zeros((n, d))
  np.add.at(want_dy, cols.ravel(), (w[..., None] * x[:, None, :]).reshape(-1, d))
  for ops in (HostOps(matrix=None, edges=None), XlaOps()):
    fn = jax.jit(lambda x, y, ops=ops: ops.row_dots(None, x, y, jnp.asarray(cols)))
    np.testing.assert_allclose(np.asarray(fn(x, y)), want, rtol=1e-5, atol=1e-4)
    dx, dy = jax.grad(lambda x, y: jnp.sum(fn(x, y) * w), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dy), want_dy, rtol=1e-5, atol=1e-3)


def test_row_dots_keep_their_inputs_dtype_on_the_host():
  x = jnp.ones((3, 4), jnp.bfloat16)
  y = jnp.arange(20, dtype=jnp.bfloat16).reshape(5, 4)
  cols = jnp.asarray([[0, 1], [2, 2], [4, 3]], jnp.int32)
  ops = HostOps(matrix=None, edges=None)
  out = jax.jit(lambda x, y: ops.row_dots(None, x, y, cols))(x, y)
  assert out.dtype == jnp.bfloat16
  want = XlaOps().row_dots(None, x, y, cols)
  np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(want, np.float32))
  dx, dy = jax.grad(lambda x, y: jnp.sum(ops.row_dots(None, x, y, cols).astype(jnp.float32)), argnums=(0, 1))(x, y)
  assert dx.dtype == dy.dtype == jnp.bfloat16
