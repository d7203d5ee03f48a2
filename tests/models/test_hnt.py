"""HNT: every vectorized path equals a plain NumPy loop on a tiny graph; gradients reach the parameter
groups each loss term should reach."""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from hnt_jax.config import base_config
from hnt_jax.data import synthetic
from hnt_jax.graph import behavior_graph, build_graphs, left_out_edges, user_rows
from hnt_jax.models import evidence, get_model
from hnt_jax.signals import weak_signals
from hnt_jax.models.hnt import hesitation as hes_lib
from hnt_jax.models.hnt.model import HNT, score_spread
from hnt_jax.models.hnt.encoder import encode_behaviors
from hnt_jax.models.hnt.transfer import info_nce, normalize
from hnt_jax.sparse_ops import HostOps, active_edges, active_gated_mean, edge_capacity, edge_gates, gated_mean
from tests.test_graph import dense_normalized


@pytest.fixture(scope="module")
def tiny():
  cfg = base_config()
  cfg.data.synthetic.update(n_users=25, n_items=30, hesitations_per_user=5)
  ds = synthetic.generate(cfg.data.synthetic)
  return cfg, ds, build_graphs(ds, weak=evidence.with_evidence_tables(weak_signals(ds, 6)))


def test_gates_and_gated_mean_equal_loops():
  rng = np.random.default_rng(0)
  dense = (rng.random((6, 9)) < 0.4).astype(np.float32)
  dense[2] = 0  # a user without edges
  g = behavior_graph(sp.csr_matrix(dense))
  phi = np.asarray(normalize(jnp.asarray(rng.normal(size=(9, 4)), jnp.float32)))
  proto = np.asarray(normalize(jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)))
  emb = rng.normal(size=(9, 3)).astype(np.float32)
  gates = np.asarray(edge_gates(g, jnp.asarray(phi), jnp.asarray(proto), 0.1, 0.2))
  h = np.asarray(gated_mean(g, jnp.asarray(gates), jnp.asarray(emb), 6))
  e = 0
  for u in range(6):
    num, den = np.zeros(3), 0.0
    for j in np.flatnonzero(dense[u]):
      want = 1 / (1 + np.exp(-((phi[j] @ proto[u]) - 0.1) / 0.2))
      assert gates[e] == pytest.approx(want, rel=1e-5)
      num, den, e = num + want * emb[j], den + want, e + 1
    np.testing.assert_allclose(h[u], num / den if den else np.zeros(3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("capacity", [12, 4])  # the active users' 11 edges fit / do not fit
def test_active_gated_mean_equals_loop_for_active_users(capacity):
  rng = np.random.default_rng(3)
  dense = (rng.random((8, 9)) < 0.45).astype(np.float32)
  dense[2] = 0  # an active user without edges
  g = behavior_graph(sp.csr_matrix(dense))
  active = np.zeros(8, bool)
  active[[0, 2, 5, 7]] = True
  phi = normalize(jnp.asarray(rng.normal(size=(9, 4)), jnp.float32))
  proto = normalize(jnp.asarray(rng.normal(size=(8, 4)), jnp.float32))
  emb = rng.normal(size=(9, 3)).astype(np.float32)
  idx, valid, count = active_edges(g, jnp.asarray(active), capacity)
  assert int(count) == int(dense[active].sum()) == 11
  np.testing.assert_array_equal(np.asarray(idx)[np.asarray(valid)][:capacity],
                                np.flatnonzero(active[np.asarray(g.users)])[:capacity])
  h = np.asarray(active_gated_mean(g, jnp.asarray(active), capacity, phi, proto, 0.1, 0.2, jnp.asarray(emb), 8))
  phi, proto = np.asarray(phi), np.asarray(proto)
  for u in np.flatnonzero(active):
    w = np.array([1 / (1 + np.exp(-((phi[j] @ proto[u]) - 0.1) / 0.2)) for j in np.flatnonzero(dense[u])])
    want = (w[:, None] * emb[np.flatnonzero(dense[u])]).sum(0) / w.sum() if w.size else np.zeros(3)
    np.testing.assert_allclose(h[u], want, rtol=1e-5, atol=1e-6)
  assert edge_capacity(100, 0.35) == 35 and edge_capacity(100, 0.0) == 0 and edge_capacity(100, 1.0) == 0


def test_training_loss_on_active_edges_and_on_the_host_equals_every_edge(tiny):
  """The loss and every gradient are the same whether a step gates only its users' edges (budget 0.9: they
  fit) or all edges (budget 0: off; 0.02: they overflow the buffer and the step falls back), with XLA's
  products, and with the host products of the CPU backend (`tiny` is built with propagation "auto")."""
  cfg, ds, host_graphs = tiny
  xla_graphs = build_graphs(ds, propagation="bcoo", weak=evidence.with_evidence_tables(weak_signals(ds, 6)))
  results = []
  for b, graphs in ((0.0, xla_graphs), (0.9, xla_graphs), (0.02, xla_graphs), (0.5, host_graphs)):
    cfg.model.hnt.update(gate_edge_budget=b, conv_embeddings="auxiliary")  # only the batch's users are active
    model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
    variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs,
                           dummy_batch(), method=model.loss)
    batch = dummy_batch(b=6, seed=4)

    def loss_fn(params, graphs, model=model, variables=variables, batch=batch):
      return model.apply({**variables, "params": params}, graphs, batch, method=model.loss,
                         rngs={"sample": jax.random.PRNGKey(2)})[0]

    # (the graphs are arguments, not constants XLA would fold at compile time)
    results.append(jax.jit(jax.value_and_grad(loss_fn))(variables["params"], graphs))
  cfg.model.hnt.update(gate_edge_budget=0.5, conv_embeddings="all")
  users = np.unique(np.asarray(dummy_batch(b=6, seed=4)["users"]))
  assert all(isinstance(g.ops, HostOps) for g in host_graphs.per_behavior)
  for g in xla_graphs.per_behavior[:-1]:  # both branches really happen
    n_active = np.isin(np.asarray(g.users), users).sum()
    assert n_active <= edge_capacity(g.n_edges, 0.9) and n_active > edge_capacity(g.n_edges, 0.02) > 0
  for loss, grads in results[1:]:
    assert float(loss) == pytest.approx(float(results[0][0]), rel=1e-6)
    chex.assert_trees_all_close(grads, results[0][1], rtol=1e-5, atol=1e-7)


def test_prototypes_equal_loop(tiny):
  cfg, ds, graphs = tiny
  model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
  params = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs,
                      dummy_batch(), method=model.loss)
  item_t = jnp.asarray(np.random.default_rng(1).normal(size=(ds.n_items, cfg.model.embed_dim)), jnp.float32)
  user_t = jnp.asarray(np.random.default_rng(2).normal(size=(ds.n_users, cfg.model.embed_dim)), jnp.float32)

  def protos(mdl):
    phi = mdl.transfer.phi(item_t)
    return phi, mdl.transfer.prototypes(graphs.target, phi, user_t), mdl.transfer.phi(user_t)

  phi, pi, phi_users = (np.asarray(x) for x in model.apply(params, method=protos))
  buy = ds.train["buy"].toarray()
  for u in range(ds.n_users):
    items = np.flatnonzero(buy[u])
    want = phi[items].sum(0) if len(items) else phi_users[u]
    np.testing.assert_allclose(pi[u], want / np.linalg.norm(want), rtol=1e-4, atol=1e-5)


def test_prototypes_without_left_out_purchases_equal_loop(tiny):
  """A loss row's purchase prototype goes without the row's purchase (once, however often the row repeats);
  a user whose every purchase is left out falls back to normalize(P e_u^K)."""
  cfg, ds, graphs = tiny
  model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
  params = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs,
                      dummy_batch(), method=model.loss)
  buy = ds.train["buy"].toarray()
  lone = next(u for u in range(ds.n_users) if buy[u].sum() >= 1)
  users, items = [], []
  for u in range(ds.n_users):
    bought = np.flatnonzero(buy[u])
    if u == lone:
      users += [u] * len(bought) + [u]  # all of them, one twice
      items += list(bought) + [bought[0]]
    elif len(bought) >= 2 and u % 2:
      users.append(u)
      items.append(bought[-1])
  users, items = np.asarray(users, np.int32), np.asarray(items, np.int32)
  edges = left_out_edges(graphs.target, jnp.asarray(users), jnp.asarray(items))
  item_t = jnp.asarray(np.random.default_rng(1).normal(size=(ds.n_items, cfg.model.embed_dim)), jnp.float32)
  user_t = jnp.asarray(np.random.default_rng(2).normal(size=(ds.n_users, cfg.model.embed_dim)), jnp.float32)

  def protos(mdl):
    phi = mdl.transfer.phi(item_t)
    return phi, mdl.transfer.prototypes(graphs.target, phi, user_t, edges), mdl.transfer.phi(user_t)

  phi, pi, phi_users = (np.asarray(x) for x in model.apply(params, method=protos))
  kept = buy.copy()
  kept[users, items] = 0
  for u in range(ds.n_users):
    bought = np.flatnonzero(kept[u])
    want = phi[bought].sum(0) if len(bought) else phi_users[u]
    np.testing.assert_allclose(pi[u], want / np.linalg.norm(want), rtol=1e-4, atol=1e-5)
  assert not kept[lone].any()


def test_loss_leaving_out_every_purchase_of_a_user_has_finite_gradients(tiny):
  """`leave_out_edges`: a row that takes away a user's only purchase (a prototype sum of exactly 0) still
  gives finite gradients, and the loss differs from the one over the whole graph."""
  cfg, ds, _ = tiny
  buy = ds.train["buy"].tolil()
  lone = 0
  buy[lone, buy.rows[lone][1:]] = 0  # user 0 keeps one purchase, which the batch leaves out
  ds = dataclasses.replace(ds, train={**ds.train, "buy": buy.tocsr()})
  graphs = build_graphs(ds, weak=evidence.with_evidence_tables(weak_signals(ds, 6)))
  u, i = ds.train["buy"].nonzero()
  rows = list(np.flatnonzero(u == lone)) + list(np.flatnonzero(u != lone)[:7])
  assert len(rows) == 8 and (u == lone).sum() == 1
  batch = {"users": jnp.asarray(u[rows], jnp.int32), "pos": jnp.asarray(i[rows], jnp.int32),
           "neg": jnp.asarray(dummy_batch(b=8, seed=7)["neg"])}
  losses = []
  for leave in (False, True):
    cfg.model.hnt.update(leave_out_edges=leave)
    model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
    variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs, batch,
                           method=model.loss)
    grads = grads_of(model, variables, graphs, batch)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    losses.append(float(model.apply(variables, graphs, batch, method=model.loss,
                                    rngs={"sample": jax.random.PRNGKey(3)})[0]))
  cfg.model.hnt.update(leave_out_edges=HNT.leave_out_edges)
  assert losses[0] != pytest.approx(losses[1], rel=1e-6)


@pytest.mark.parametrize("propagation", ["bcoo", "host"])
def test_encoder_without_left_out_edges_equals_dense(propagation):
  """The target behavior's propagation without the rows' purchase edges is Â with those entries zeroed
  (both directions, each once; the degrees stay those of the whole graph); the auxiliary behaviors keep
  every edge."""
  rng = np.random.default_rng(5)
  mats = [(rng.random((5, 7)) < p).astype(np.float32) for p in (0.5, 0.3, 0.4)]
  graphs = [behavior_graph(sp.csr_matrix(m), propagation) for m in mats]
  u, i = np.nonzero(mats[-1])
  pick = [0, 2, 3, 0]  # a repeated row
  users, items = u[pick].astype(np.int32), i[pick].astype(np.int32)
  left = left_out_edges(graphs[-1], jnp.asarray(users), jnp.asarray(items))
  ego = rng.normal(size=(12, 4)).astype(np.float32)
  outs = encode_behaviors(graphs, jnp.asarray(ego), 2, "cascade", False, left)
  prev = ego
  for k, m in enumerate(mats):
    a = dense_normalized(m)
    if k == len(mats) - 1:
      a[users, 5 + items] = 0
      a[5 + items, users] = 0
    prev = (prev + a @ prev + a @ a @ prev) / 3
    np.testing.assert_allclose(np.asarray(outs[k]), prev, rtol=1e-4, atol=1e-5)
  distinct = sorted(set(zip(users.tolist(), items.tolist())))
  assert len(distinct) == 3
  np.testing.assert_array_equal(np.asarray(left.counts), np.bincount([p[0] for p in distinct], minlength=5))


@pytest.mark.parametrize("propagation", ["bcoo", "host"])
@pytest.mark.parametrize("mode,residual", [("cascade", False), ("cascade", True), ("parallel", False)])
def test_encoder_equals_dense(mode, residual, propagation):
  rng = np.random.default_rng(3)
  mats = [(rng.random((5, 7)) < p).astype(np.float32) for p in (0.5, 0.3, 0.2)]
  graphs = [behavior_graph(sp.csr_matrix(m), propagation) for m in mats]
  ego = rng.normal(size=(12, 4)).astype(np.float32)
  outs = encode_behaviors(graphs, jnp.asarray(ego), 2, mode, residual)
  prev = None
  for k, m in enumerate(mats):
    a = dense_normalized(m)
    x = ego if (mode == "parallel" or k == 0) else (prev + ego if residual else prev)
    prev = (x + a @ x + a @ a @ x) / 3
    np.testing.assert_allclose(np.asarray(outs[k]), prev, rtol=1e-4, atol=1e-5)


def test_candidates_are_the_weak_signals_with_most_behaviors_first(tiny):
  _, ds, graphs = tiny
  w = graphs.weak
  weak = ds.weak_signal_pairs().toarray() > 0
  view, cart = ds.train["view"].toarray() > 0, ds.train["cart"].toarray() > 0
  items, mask, aux = (np.asarray(x) for x in (w.cand_items, w.cand_mask, w.cand_aux))
  for u in range(ds.n_users):
    allw = np.flatnonzero(weak[u])
    order = sorted(allw, key=lambda i: (-(int(view[u, i]) + int(cart[u, i])), i))[:6]
    assert items[u][mask[u]].tolist() == [int(i) for i in order]
    for c in np.flatnonzero(mask[u]):
      assert aux[u, c].tolist() == [float(view[u, items[u, c]]), float(cart[u, items[u, c]])]


def test_vmap_scoring_and_top_m_equal_loops(tiny):
  _, ds, graphs = tiny
  w = graphs.weak
  table = jnp.asarray(np.random.default_rng(4).normal(size=(ds.n_users, ds.n_items)), jnp.float32)

  def logit_fn(u, items, aux):
    return table[u, items] + aux.sum(-1)

  probs = np.asarray(hes_lib.score_candidates(logit_fn, w, chunk=4))
  chosen = jax.device_get(hes_lib.select_hesitations(jnp.asarray(probs), w, 0.55, 3))
  items, mask, aux = (np.asarray(x) for x in (w.cand_items, w.cand_mask, w.cand_aux))
  t = np.asarray(table)
  for u in range(ds.n_users):
    want_p = [1 / (1 + np.exp(-(t[u, i] + aux[u, c].sum()))) if mask[u, c] else 0.0
              for c, i in enumerate(items[u])]
    np.testing.assert_allclose(probs[u], want_p, rtol=1e-5, atol=1e-6)
    eligible = [(p, items[u, c]) for c, p in enumerate(want_p) if mask[u, c] and p >= 0.55]
    top = sorted(eligible, key=lambda x: -x[0])[:3]
    got = [(float(chosen["conf"][u, r]), int(chosen["items"][u, r])) for r in range(3) if chosen["mask"][u, r]]
    assert [i for _, i in got] == [int(i) for _, i in top]
    np.testing.assert_allclose([p for p, _ in got], [p for p, _ in top], rtol=1e-5)


def test_info_nce_equals_loop():
  rng = np.random.default_rng(5)
  a, p = rng.normal(size=(7, 3)).astype(np.float32), rng.normal(size=(7, 3)).astype(np.float32)
  mask = np.array([True, False, True, True, True, False, True])

  def reference(a, p):
    live = np.flatnonzero(mask)
    logits = a[live] @ p[live].T / 0.5
    return np.mean(np.log(np.exp(logits).sum(axis=1)) - np.diag(logits))

  def loss(a, p):
    return info_nce(a, p, jnp.asarray(mask), 0.5)

  assert float(loss(jnp.asarray(a), jnp.asarray(p))) == pytest.approx(reference(a, p), rel=1e-5)
  grads = jax.grad(loss, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(p))
  for arg, got in enumerate(grads):  # central differences of the NumPy reference
    want = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
      args = [a.astype(np.float64), p.astype(np.float64)]
      hi, lo = [x.copy() for x in args], [x.copy() for x in args]
      hi[arg][idx] += 1e-5
      lo[arg][idx] -= 1e-5
      want[idx] = (reference(*hi) - reference(*lo)) / 2e-5
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-5)


def test_hesitation_loss_and_sampling():
  hes = {"items": jnp.asarray([[3, 4], [0, 0]]), "mask": jnp.asarray([[True, True], [False, False]]),
         "conf": jnp.asarray([[0.9, 0.7], [0.0, 0.0]])}
  items, conf, valid = hes_lib.sample_from_sets(jax.random.PRNGKey(0), hes, jnp.asarray([0, 1, 0]))
  assert valid.tolist() == [True, False, True] and int(items[0]) in (3, 4)
  y_h, y_p, y_n = jnp.asarray([1.0, 5.0, 2.0]), jnp.asarray([2.0, 0.0, 1.0]), jnp.asarray([0.0, 0.0, 0.5])
  got = float(hes_lib.hesitation_loss(y_h, y_p, y_n, conf, valid, beta=0.5))
  c = np.asarray(conf)
  per = [-c[b] * np.log(1 / (1 + np.exp(-(y_h[b] - y_n[b])))) - 0.5 * np.log(1 / (1 + np.exp(-(y_p[b] - y_h[b]))))
         for b in (0, 2)]
  assert got == pytest.approx(np.mean(per), rel=1e-5)


def test_sampled_softmax_loss_approaches_the_full_softmax(tiny):
  """`softmax_samples`: with many draws, L_rank (the `softmax` metric) and the gradients of the loss are
  those of the softmax over every item; with a few they differ, but stay finite (L_sim and L_hes off: the
  draws take a key from the stream their sampling reads next)."""
  cfg, ds, graphs = tiny
  u, i = ds.train["buy"].nonzero()
  rows = np.random.default_rng(0).choice(len(u), 16, replace=False)
  batch = {"users": jnp.asarray(u[rows], jnp.int32), "pos": jnp.asarray(i[rows], jnp.int32),
           "neg": dummy_batch()["neg"]}
  out = {}
  for samples in (0, 50000, 8):
    cfg.model.hnt.update(softmax_samples=samples, lambda_sim=0.0, lambda_hes=0.0)
    model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
    variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs, batch,
                           method=model.loss)
    metrics = model.apply(variables, graphs, batch, method=model.loss, rngs={"sample": jax.random.PRNGKey(3)})[1]
    out[samples] = float(metrics["softmax"]), grads_of(model, variables, graphs, batch)
  cfg.model.hnt.update(softmax_samples=HNT.softmax_samples, lambda_sim=HNT.lambda_sim, lambda_hes=HNT.lambda_hes)
  assert out[50000][0] == pytest.approx(out[0][0], rel=2e-3)
  for got, want in zip(jax.tree_util.tree_leaves(out[50000][1]), jax.tree_util.tree_leaves(out[0][1])):
    assert np.linalg.norm(np.asarray(got) - np.asarray(want)) <= 0.02 * np.linalg.norm(np.asarray(want))
  assert out[8][0] != pytest.approx(out[0][0], rel=2e-3)
  chex.assert_tree_all_finite(out[8][1])


def dummy_batch(b=16, seed=0, n_users=25, n_items=30):
  rng = np.random.default_rng(seed)
  return {"users": jnp.asarray(rng.integers(0, n_users, b), jnp.int32),
          "pos": jnp.asarray(rng.integers(0, n_items, b), jnp.int32),
          "neg": jnp.asarray(rng.integers(0, n_items, b), jnp.int32)}


def grads_of(model, variables, graphs, batch):
  def loss_fn(p, graphs):
    return model.apply({**variables, "params": p}, graphs, batch, method=model.loss,
                       rngs={"sample": jax.random.PRNGKey(3)})[0]
  return jax.jit(jax.grad(loss_fn))(variables["params"], graphs)


def nonzero_groups(grads):
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  return {jax.tree_util.keystr(path): float(jnp.abs(g).sum()) > 0 for path, g in flat}


def test_gradients_finite_and_reach_every_group(tiny):
  cfg, ds, graphs = tiny
  cfg.model.hnt.lambda_aux = 0.5
  model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
  keys = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}
  variables = model.init(keys, graphs, dummy_batch(), method=model.loss)
  # plant non-empty hesitation sets so that L_hes is active
  variables = dict(variables)
  variables["hesitation"] = model.apply(variables, graphs, method=model.refresh, mutable=["hesitation"])[1][
      "hesitation"]
  variables["hesitation"] = dict(variables["hesitation"], mask=jnp.ones_like(variables["hesitation"]["mask"]),
                                 conf=jnp.ones_like(variables["hesitation"]["conf"]))
  grads = grads_of(model, variables, graphs, dummy_batch())
  chex.assert_tree_all_finite(grads)
  reached = nonzero_groups(grads)
  assert all(reached.values()), [k for k, v in reached.items() if not v]
  # the conversion model learns only from L_conv: with λ_c = 0 it gets no gradient
  cfg.model.hnt.lambda_conv = 0.0
  model0 = get_model(cfg.model, ds.n_users, ds.n_items, 3)
  g0 = nonzero_groups(grads_of(model0, variables, graphs, dummy_batch()))
  assert not any(v for k, v in g0.items() if "conversion" in k)
  assert g0["['users']"] and any(v for k, v in g0.items() if k.startswith("['scorer']"))
  cfg.model.hnt.update(lambda_conv=0.1, lambda_aux=0.0)


def test_ablations_switch_modules_off(tiny):
  cfg, ds, graphs = tiny
  cfg.model.hnt.update(use_negative_transfer=False, use_hesitation=False)
  model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
  variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs,
                         dummy_batch(), method=model.loss)
  assert "hesitation" not in variables and "conversion" not in variables["params"]
  emb = model.apply(variables, graphs, method=model.embed)
  assert all(float(jnp.min(g)) == 1.0 for g in emb.gates)  # every gate is 1
  _, metrics = model.apply(variables, graphs, dummy_batch(), method=model.loss,
                           rngs={"sample": jax.random.PRNGKey(0)})
  assert set(metrics) == {"softmax", "l2"}
  cfg.model.hnt.use_evidence = False  # the collaborative part alone: no scorer
  model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
  variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs,
                         dummy_batch(), method=model.loss)
  assert "scorer" not in variables["params"]
  emb = model.apply(variables, graphs, method=model.embed)
  scores = np.asarray(model.apply(variables, graphs, emb, jnp.arange(3), method=model.score))
  unit = lambda x: np.asarray(x) / np.linalg.norm(np.asarray(x), axis=1, keepdims=True)
  np.testing.assert_allclose(scores, unit(emb.users[:3]) @ unit(emb.items).T / model.cf_temperature,
                             rtol=1e-5, atol=1e-5)
  cfg.model.hnt.update(use_negative_transfer=True, use_hesitation=True, use_evidence=True)


def test_sim_batch_takes_l_sim_over_the_batchs_first_rows(tiny):
  """`sim_batch` = n: L_sim of a batch is L_sim of its first n rows (the same partners drawn); n at least
  the batch, or 0, is every row. (Training purchases as rows, each row's edge kept in the graph, so that the
  item representations do not depend on the batch.)"""
  cfg, ds, graphs = tiny
  target = ds.train_target.tocoo()
  batch = {"users": jnp.asarray(target.row[:16], jnp.int32), "pos": jnp.asarray(target.col[:16], jnp.int32),
           "neg": jnp.zeros(16, jnp.int32)}

  def sim(sim_batch, rows):
    cfg.model.hnt.update(sim_batch=sim_batch, leave_out_edges=False)
    model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
    cut = {k: v[:rows] for k, v in batch.items()}
    variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs, cut,
                           method=model.loss)
    _, metrics = model.apply(variables, graphs, cut, method=model.loss, rngs={"sample": jax.random.PRNGKey(2)})
    return float(metrics["sim"])

  before = (cfg.model.hnt.sim_batch, cfg.model.hnt.leave_out_edges)
  try:
    assert sim(6, 16) == pytest.approx(sim(0, 6), rel=1e-6)
    assert sim(6, 16) != pytest.approx(sim(0, 16), rel=1e-3)
    assert sim(16, 16) == sim(40, 16) == sim(0, 16)
  finally:
    cfg.model.hnt.update(sim_batch=before[0], leave_out_edges=before[1])


def test_score_scale_diagnostics_equal_numpy(tiny):
  """`score_std` is the std over items of the collaborative part cos(z_u, z_i) / τ_cf, averaged over the
  given users (computed through the items' covariance)."""
  rng = np.random.default_rng(5)
  users, items = rng.normal(size=(7, 4)), rng.normal(loc=0.3, size=(11, 4))
  want = np.mean(np.std(users @ items.T, axis=1))
  assert float(score_spread(jnp.asarray(users, jnp.float32), jnp.asarray(items, jnp.float32))) == \
      pytest.approx(want, rel=1e-5)
  cfg, ds, graphs = tiny
  cfg = cfg.copy_and_resolve_references()
  cfg.model.hnt.update(use_negative_transfer=True, use_hesitation=True)
  model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
  variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs,
                         dummy_batch(), method=model.loss)
  evaluated = jnp.asarray([1, 4, 9, 20], jnp.int32)
  out = model.apply(variables, graphs, user_rows(ds.test), evaluated, method=model.diagnostics)
  emb = model.apply(variables, graphs, method=model.embed)
  unit = lambda x: np.asarray(x) / np.linalg.norm(np.asarray(x), axis=1, keepdims=True)
  dots = unit(emb.users)[np.asarray(evaluated)] @ unit(emb.items).T / model.cf_temperature
  assert float(out["score_std"]) == pytest.approx(np.mean(np.std(dots, axis=1)), rel=1e-4)
  assert float(out["score_std"]) > 0
  assert "gate_mean/view" in out and "hesitation_precision" in out


@pytest.mark.parametrize("mode", ["all", "auxiliary", "none"])
def test_conversion_features_follow_conv_embeddings(tiny, mode):
  cfg, ds, graphs = tiny
  cfg = cfg.copy_and_resolve_references()
  cfg.model.hnt.conv_embeddings = mode
  model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
  variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs,
                         dummy_batch(), method=model.loss)
  emb = model.apply(variables, graphs, method=model.embed)
  u, i = jnp.arange(5), jnp.arange(5)
  flags = jnp.ones((5, 2))
  logits = lambda e: np.asarray(model.apply(variables, graphs, e, u, i, flags, method=model.conversion_logits))
  base = logits(emb)
  z_changed = logits(emb.replace(users=emb.users * 3.0))
  beh_changed = logits(emb.replace(beh_users=emb.beh_users * 3.0))
  assert np.allclose(base, z_changed) == (mode != "all")
  assert np.allclose(base, beh_changed) == (mode == "none")
  width = variables["params"]["conversion"]["hidden"]["kernel"].shape[0]
  d = cfg.model.embed_dim
  assert width == 2 + 2 + 1 + {"all": 3 * d, "auxiliary": 2 * d, "none": 0}[mode]


def test_unknown_feature_choices_and_bad_scorer_settings_are_config_errors(tiny):
  from hnt_jax.config_checks import validate
  from hnt_jax.errors import ConfigError
  cfg, _, _ = tiny
  for key, value, problem in [("conv_embeddings", "some", "is not one of"),
                              ("cf_temperature", 0.0, "must be"), ("scorer_layers", -1, "must be")]:
    c = cfg.copy_and_resolve_references()
    c.model.hnt[key] = value
    with pytest.raises(ConfigError, match=f"model.hnt.{key}={value!r} {problem}"):
      validate(c)
