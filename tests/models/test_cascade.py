"""CRGCN- and MB-CGCN-style baselines: propagation equals a dense NumPy reference on a tiny graph; the
multi-task loss reaches every block; both train on planted data."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hnt_jax.config import base_config
from hnt_jax.data import synthetic
from hnt_jax.graph import build_graphs
from hnt_jax.models import get_model
from tests.test_graph import dense_normalized


@pytest.fixture(scope="module")
def tiny():
  cfg = base_config()
  cfg.data.synthetic.update(n_users=20, n_items=25, hesitations_per_user=4)
  ds = synthetic.generate(cfg.data.synthetic)
  return cfg, ds, build_graphs(ds, propagation="bcoo")


def init(cfg, ds, graphs, name, **model):
  cfg = cfg.copy_and_resolve_references()
  cfg.model.update(name=name, embed_dim=8, **model)
  m = get_model(cfg.model, ds.n_users, ds.n_items, len(ds.behaviors))
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.integers(0, n, 12), jnp.int32)
           for k, n in (("users", ds.n_users), ("pos", ds.n_items), ("neg", ds.n_items))}
  keys = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}
  return m, m.init(keys, graphs, batch, method=m.loss), batch


def dense_adjacencies(ds):
  return [dense_normalized(ds.train[b].toarray()) for b in ds.behaviors]


@pytest.mark.parametrize("layers", [1, 2])
def test_crgcn_blocks_equal_dense_reference(tiny, layers):
  cfg, ds, graphs = tiny
  model, variables, _ = init(cfg, ds, graphs, "crgcn", crgcn=dict(n_layers=layers))
  p = variables["params"]
  x = np.concatenate([p["users"], p["items"]]).astype(np.float64)
  for a in dense_adjacencies(ds):  # E_k = E_{k-1} + mean_{l=1..L} Â_k^l E_{k-1}
    h, total = x, np.zeros_like(x)
    for _ in range(layers):
      h = a @ h
      total += h
    x = x + total / layers
  emb = model.apply(variables, graphs, method=model.embed)
  np.testing.assert_allclose(np.asarray(emb.users), x[:ds.n_users], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(emb.items), x[ds.n_users:], rtol=1e-4, atol=1e-6)


def test_mbcgcn_blocks_equal_dense_reference(tiny):
  cfg, ds, graphs = tiny
  model, variables, _ = init(cfg, ds, graphs, "mbcgcn", n_layers=2)
  p = variables["params"]
  x = np.concatenate([p["users"], p["items"]]).astype(np.float64)
  outs = []
  for k, a in enumerate(dense_adjacencies(ds)):
    inp = x if k == 0 else outs[-1] @ np.asarray(p[f"W_{k - 1}"]["kernel"])
    outs.append((inp + a @ inp + a @ (a @ inp)) / 3)
  final = sum(outs)
  emb = model.apply(variables, graphs, method=model.embed)
  np.testing.assert_allclose(np.asarray(emb.users), final[:ds.n_users], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(emb.items), final[ds.n_users:], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["crgcn", "mbcgcn"])
def test_losses_are_finite_and_reach_every_parameter(tiny, name):
  cfg, ds, graphs = tiny
  model, variables, batch = init(cfg, ds, graphs, name)

  def loss(params):
    return model.apply({"params": params}, graphs, batch, method=model.loss,
                       rngs={"sample": jax.random.PRNGKey(2)})[0]

  grads = jax.grad(loss)(variables["params"])
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0, jax.tree_util.keystr(path)
  _, metrics = model.apply(variables, graphs, batch, method=model.loss, rngs={"sample": jax.random.PRNGKey(2)})
  assert ("aux_bpr" in metrics) == (name == "crgcn")


def test_crgcn_without_multitask_has_only_the_target_loss(tiny):
  cfg, ds, graphs = tiny
  model, variables, batch = init(cfg, ds, graphs, "crgcn", crgcn=dict(multitask_weight=0.0))
  _, metrics = model.apply(variables, graphs, batch, method=model.loss, rngs={"sample": jax.random.PRNGKey(0)})
  assert set(metrics) == {"bpr", "l2"}
