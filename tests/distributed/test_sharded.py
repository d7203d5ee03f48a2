"""Sharded training and evaluation on several (simulated) devices equal the single-device run.

Needs 4 devices: `tests/test_distributed.py` runs this file in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (set before JAX starts).
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.sparse as sp

from hnt_jax import distributed, graph
from hnt_jax.train.loop import train_and_evaluate
from hnt_jax.train.setup import Run
from tests.test_graph import dense_normalized, random_matrix
from tests.train.test_loop import Interrupt, interrupt_after, read_lines, small_config

pytestmark = pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 devices (run by test_distributed.py)")


def mesh_cfg(data, model=1):
  return ml_collections.ConfigDict(dict(data=data, model=model, distributed="off"))


@pytest.mark.parametrize("data,model", [(4, 1), (2, 2), (3, 1)])
def test_row_sharded_propagation_and_gradient_equal_dense(data, model):
  mesh = distributed.make_mesh(mesh_cfg(data, model))
  rng = np.random.default_rng(data)
  dense = random_matrix(rng, 11, 9, 0.3)
  g = graph.behavior_graph(sp.csr_matrix(dense), mesh=mesh)
  assert g.adj is None and g.shards.rows.shape[0] == data  # each device holds its block of rows only
  a = dense_normalized(dense)
  x = rng.normal(size=(20, 5)).astype(np.float32)
  out = jax.jit(lambda x: graph.propagate(g, x))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(out), a @ x, rtol=1e-5, atol=1e-6)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(graph.propagate(g, x)))))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(grad), a.T @ np.cos(a @ x), rtol=1e-5, atol=1e-6)


def sharded_config(model_name, data=-1, model=1, **train):
  config = small_config(**{"epochs": 2, "eval_every": 1, "checkpoint_every": 1, **train})
  config.model.name = model_name
  config.model.hnt.hes_refresh_every = 1  # HNT's hesitation sets change every epoch
  config.mesh.update(data=data, model=model, distributed="off")
  return config


def assert_same_run(a_dir, b_dir, a, b, tol=1e-4):
  la, lb = read_lines(a_dir / "metrics.jsonl"), read_lines(b_dir / "metrics.jsonl")
  assert [r["epoch"] for r in la] == [r["epoch"] for r in lb]
  np.testing.assert_allclose([r["loss"] for r in la], [r["loss"] for r in lb], rtol=tol)
  for split in ("valid", "test"):
    for key, value in a[split].items():
      assert b[split][key] == pytest.approx(value, abs=5e-3), (split, key)


@pytest.mark.parametrize("model_name,data,model", [("lightgcn", -1, 1), ("lightgcn_g", 2, 2), ("hnt", -1, 1)])
def test_training_on_several_devices_matches_one(tmp_path, model_name, data, model):
  """(HNT: its pair-evidence tables split by users, `split_by_users`.)"""
  one_dir, one = tmp_path / "one", train_and_evaluate(sharded_config(model_name, data=1), str(tmp_path / "one"))
  many = train_and_evaluate(sharded_config(model_name, data=data, model=model), str(tmp_path / "many"))
  assert one["device"]["mesh"] == "single device"
  assert many["device"]["mesh"] == f"data={4 // model if data == -1 else data} x model={model}"
  assert_same_run(one_dir, tmp_path / "many", one, many)


def test_sharded_evaluation_equals_unsharded():
  cfg_one, cfg_many = sharded_config("lightgcn", data=1), sharded_config("lightgcn", data=-1)
  cfg_many.eval.chunk_cells = 40 * 150 * 3  # several chunks
  one, many = Run(cfg_one), Run(cfg_many)
  params, state = one.init_variables()
  a = one.evaluate(params, state, "test")
  b = many.evaluate(jax.device_put(params, distributed.replicated(many.mesh)), state, "test")
  assert many.evaluators["test"].chunk % 4 == 0 and many.evaluators["test"].users.shape[0] > 1
  assert a.keys() == b.keys()
  for key in a:
    assert b[key] == pytest.approx(a[key], abs=1e-6), key


@pytest.mark.parametrize("leave_out", [False, True])
def test_hnt_loss_and_gradients_on_four_devices_equal_one(leave_out):
  """HNT's whole objective (cascade propagation, gates, views, L_sim, L_conv, L_hes with planted sets) and its
  gradients, computed on the 4-device mesh, equal the single-device values; also with each row's purchase
  edge left out of the propagation (`leave_out_edges`, on real training purchases)."""
  cfg_one, cfg_many = sharded_config("hnt", data=1), sharded_config("hnt", data=-1)
  for cfg in (cfg_one, cfg_many):
    cfg.model.hnt.leave_out_edges = leave_out
  one, many = Run(cfg_one), Run(cfg_many)
  params, model_state = one.init_variables()
  model_state = one.refresh(params, model_state)  # non-empty hesitation sets
  batch = {k: jnp.arange(64, dtype=jnp.int32) % 100 for k in ("users", "pos", "neg")}
  if leave_out:
    target = one.graphs.target
    batch.update(users=target.users[:64], pos=target.items[:64])
  key = jax.random.PRNGKey(3)

  def loss_and_grads(run, params, model_state, batch):
    def loss(p):
      return run.model.apply({"params": p, **model_state}, run.graphs, batch, method=run.model.loss,
                             rngs={"sample": key})[0]
    return jax.jit(jax.value_and_grad(loss))(params)

  l1, g1 = loss_and_grads(one, params, model_state, batch)
  rep = distributed.replicated(many.mesh)
  sharded_batch = {k: jax.device_put(v, distributed.rows_sharding(many.mesh)) for k, v in batch.items()}
  l4, g4 = loss_and_grads(many, jax.device_put(params, rep), jax.device_put(model_state, rep), sharded_batch)
  assert float(l4) == pytest.approx(float(l1), rel=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("data", [4, 3])
def test_hnt_user_tables_split_over_data_and_the_results_equal_one_device(data):
  """On the mesh every per-user table of HNT's pair evidence (`signals.USER_TABLES`) is split by users over
  `data`, each device holding one block of rows (200 users over 3 devices: padded to 201). The tables hold
  the single-device values, and the hesitation sets, the diagnostics and the full-ranking test evaluation
  computed from them equal one device's."""
  from hnt_jax import signals
  configs = [sharded_config("hnt", data=d) for d in (1, data)]
  for cfg in configs:  # the untrained conversion model's probabilities are near 0.5: let them in
    cfg.model.hnt.hes_threshold = 0.0
  one, many = (Run(cfg) for cfg in configs)
  m = one.ds.n_users
  rows = -(-m // data)
  for name in signals.USER_TABLES:
    table, whole = getattr(many.graphs.weak, name), getattr(one.graphs.weak, name)
    assert [s.data.shape[0] for s in table.addressable_shards] == [rows] * data, name
    np.testing.assert_array_equal(np.asarray(table)[:m], np.asarray(whole), err_msg=name)
    assert not np.asarray(table)[m:].any(), name
  assert one.graphs.weak.cand_features.shape[0] == m  # one device: nothing padded
  params, state = one.init_variables()
  rep = distributed.replicated(many.mesh)
  state_one = one.refresh(params, state)
  state_many = many.refresh(jax.device_put(params, rep), jax.device_put(state, rep))
  assert np.asarray(state_one["hesitation"]["mask"]).any()
  for a, b in zip(jax.tree.leaves(state_one), jax.tree.leaves(state_many)):
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
  for run_a, run_b in [(one.evaluate, many.evaluate), (one.diagnostics, many.diagnostics)]:
    a = run_a(params, state_one, "test")
    b = run_b(jax.device_put(params, rep), state_many, "test")
    assert a.keys() == b.keys() and len(a) > 3
    for key in a:
      assert b[key] == pytest.approx(a[key], abs=1e-5), key


@pytest.mark.parametrize("first,second", [(-1, 1), (1, -1)])
def test_checkpoint_moves_between_device_counts(tmp_path, first, second):
  """Interrupted on one device count, resumed on the other: the run ends at the uninterrupted result."""
  run_one = Run(sharded_config("lightgcn", data=1, epochs=4))
  reference = train_and_evaluate(sharded_config("lightgcn", data=1, epochs=4), str(tmp_path / "ref"), run=run_one)
  with pytest.raises(Interrupt):
    train_and_evaluate(sharded_config("lightgcn", data=first, epochs=4), str(tmp_path / "cut"),
                       hooks=[interrupt_after(2)])
  resumed = train_and_evaluate(sharded_config("lightgcn", data=second, epochs=4), str(tmp_path / "cut"))
  assert resumed["epochs_run"] == 4
  assert resumed["device"]["mesh"] == ("single device" if second == 1 else "data=4 x model=1")
  assert_same_run(tmp_path / "ref", tmp_path / "cut", reference, resumed)


def test_bad_mesh_settings_are_config_errors():
  from hnt_jax.errors import ConfigError
  with pytest.raises(ConfigError, match="mesh.model=3"):
    distributed.make_mesh(mesh_cfg(-1, 3))
  with pytest.raises(ConfigError, match="needs 8 devices"):
    distributed.make_mesh(mesh_cfg(8))
  with pytest.raises(ConfigError, match="multiple of the mesh's data size 4"):
    distributed.check_batch_size(distributed.make_mesh(mesh_cfg(4)), 250)


@pytest.mark.parametrize("data", [4, 3])
def test_sharded_edge_products_and_gates_equal_one_device(data):
  """The incidence product, the mean view and negative transfer's gated view (values, gates in CSR order,
  gradients) computed by blocks of users on the mesh equal XLA's single-device products; each device holds
  its block's edges only."""
  from hnt_jax import sparse_ops
  mesh = distributed.make_mesh(mesh_cfg(data))
  rng = np.random.default_rng(data)
  dense = random_matrix(rng, 13, 9, 0.35)
  dense[5] = 0  # a user without edges
  one = graph.behavior_graph(sp.csr_matrix(dense), propagation="bcoo")
  many = graph.behavior_graph(sp.csr_matrix(dense), mesh=mesh)
  assert isinstance(many.ops, sparse_ops.ShardedOps)
  assert many.edge_shards.rows.shape[0] == data and many.edge_shards.rows.shape[1] < one.n_edges
  emb = jnp.asarray(rng.normal(size=(9, 6)), jnp.float32)
  phi = jnp.asarray(rng.normal(size=(9, 4)), jnp.float32)
  protos = jnp.asarray(rng.normal(size=(13, 4)), jnp.float32)
  delta = jnp.float32(0.1)

  def products(g, emb, phi, protos, delta):
    h, gate = g.ops.gated_view(g, phi, protos, emb, delta, 0.5)
    mean, ones = g.ops.mean_view(g, emb)
    return g.ops.incidence_matmul(g, emb), mean, ones, h, gate

  want = jax.jit(lambda *a: products(one, *a))(emb, phi, protos, delta)
  got = jax.jit(lambda *a: products(many, *a))(emb, phi, protos, delta)
  np.testing.assert_allclose(np.asarray(want[0]), dense @ np.asarray(emb), rtol=1e-5, atol=1e-6)
  for a, b in zip(want, got):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)

  def objective(g):
    def f(emb, phi, protos, delta):
      inc, mean, _, h, gate = products(g, emb, phi, protos, delta)
      return jnp.sum(jnp.sin(h)) + jnp.sum(jnp.cos(mean)) + jnp.sum(inc ** 2) + jnp.sum(gate ** 3)
    return jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))

  for a, b in zip(objective(one)(emb, phi, protos, delta), objective(many)(emb, phi, protos, delta)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
