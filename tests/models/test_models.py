"""Models against dense NumPy references; the registry; gradients reach every parameter."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hnt_jax.config import base_config
from hnt_jax.data import synthetic
from hnt_jax.errors import ConfigError
from hnt_jax.graph import build_graphs
from hnt_jax.models import get_model

from tests.test_graph import dense_normalized


@pytest.fixture(scope="module")
def tiny():
  cfg = base_config()
  cfg.data.synthetic.n_users, cfg.data.synthetic.n_items = 30, 20
  ds = synthetic.generate(cfg.data.synthetic)
  return cfg, ds, build_graphs(ds)


def batch(ds, b=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"users": jnp.asarray(rng.integers(0, ds.n_users, b), jnp.int32),
          "pos": jnp.asarray(rng.integers(0, ds.n_items, b), jnp.int32),
          "neg": jnp.asarray(rng.integers(0, ds.n_items, b), jnp.int32)}


@pytest.mark.parametrize("name,behaviors", [("lightgcn", ("buy",)), ("lightgcn_g", ("view", "cart", "buy"))])
def test_lightgcn_equals_dense_propagation(tiny, name, behaviors):
  cfg, ds, graphs = tiny
  cfg.model.name = name
  model = get_model(cfg.model, ds.n_users, ds.n_items)
  params = model.init(jax.random.PRNGKey(0), graphs, batch(ds), method=model.loss)
  emb = model.apply(params, graphs, method=model.embed)
  p = params["params"]
  ego = np.concatenate([np.asarray(p["users"]), np.asarray(p["items"])])
  r = (sum(ds.train[b] for b in behaviors) > 0).toarray().astype(np.float32)
  a = dense_normalized(r)
  ref = (ego + a @ ego + a @ a @ ego) / 3
  np.testing.assert_allclose(np.asarray(emb.users), ref[:ds.n_users], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(emb.items), ref[ds.n_users:], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["mf", "lightgcn", "lightgcn_g"])
def test_bpr_loss_and_gradients_reach_every_parameter(tiny, name):
  cfg, ds, graphs = tiny
  cfg.model.name = name
  model = get_model(cfg.model, ds.n_users, ds.n_items)
  b = batch(ds)
  params = model.init(jax.random.PRNGKey(0), graphs, b, method=model.loss)
  (loss, metrics), grads = jax.value_and_grad(
      lambda p: model.apply(p, graphs, b, method=model.loss), has_aux=True)(params)
  chex.assert_tree_all_finite(grads)
  emb = model.apply(params, graphs, method=model.embed)
  u, i, j = (np.asarray(b[k]) for k in ("users", "pos", "neg"))
  eu, ei = np.asarray(emb.users), np.asarray(emb.items)
  diff = (eu[u] * (ei[i] - ei[j])).sum(1)
  np.testing.assert_allclose(float(metrics["bpr"]), np.mean(np.log1p(np.exp(-diff))), rtol=1e-5)
  for leaf in jax.tree.leaves(grads):
    assert float(jnp.abs(leaf).sum()) > 0


def test_heuristic_scores_equal_formula(tiny):
  cfg, ds, graphs = tiny
  cfg.model.name = "heuristic"
  model = get_model(cfg.model, ds.n_users, ds.n_items)
  params = model.init(jax.random.PRNGKey(0), graphs, batch(ds), method=model.loss)
  emb = model.apply(params, graphs, method=model.embed)
  users = jnp.arange(ds.n_users)
  got = np.asarray(model.apply(params, graphs, emb, users, method=model.score))
  pop = np.asarray(ds.train["buy"].sum(0)).ravel()
  want = ds.train["view"].toarray() * 1 + ds.train["cart"].toarray() * 2 + 0.5 * pop / pop.max()
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_unknown_model_name(tiny):
  cfg, ds, _ = tiny
  cfg.model.name = "nope"
  with pytest.raises(ConfigError, match="model.name='nope'"):
    get_model(cfg.model, ds.n_users, ds.n_items)


def test_module_defaults_are_the_config_defaults():
  """One set of defaults: a module built by hand is the model the command line builds from base_config()."""
  import dataclasses

  from hnt_jax.models import REGISTRY
  config = base_config()
  for name, (cls, _, fixed) in REGISTRY.items():
    config.model.name = name
    from_config = get_model(config.model, 10, 12, 3)
    extra = {"n_behaviors": 3} if "n_behaviors" in {f.name for f in dataclasses.fields(cls)} else {}
    by_hand = cls(n_users=10, n_items=12, **fixed, **extra)
    assert from_config == by_hand, name
