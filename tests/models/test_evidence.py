"""The pair evidence and the losses built on it equal plain NumPy loops on a tiny dataset; full-ranking
scores of pair_ranker and HNT are the per-pair scores, item by item."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from hnt_jax.config import base_config
from hnt_jax.data import synthetic
from hnt_jax.data.dataset import binary_csr
from hnt_jax.graph import build_graphs
from hnt_jax.models import evidence, get_model
from hnt_jax.signals import collaborative_candidates, cross_counts, weak_signals
from tests.models.test_hnt import dummy_batch


@pytest.fixture(scope="module")
def tiny():
  cfg = base_config()
  cfg.data.synthetic.update(n_users=25, n_items=30, hesitations_per_user=5)
  ds = synthetic.generate(cfg.data.synthetic)
  # 64 candidates: A_u is every auxiliary item; 4 collaborative candidates: fewer than most users could have
  return cfg, ds, build_graphs(ds, weak=evidence.with_evidence_tables(weak_signals(ds, 64, CF)))


CF = 4


def reference_collaborative(ds, u, width=CF):
  """u's collaborative candidates (items u has no training pair with, by co-buy count, largest first, ties
  to the lower id) and the floor a left-out purchase outside A_u must reach to count as one."""
  buy = (ds.train_target.toarray() != 0).astype(float)
  seen = np.any([ds.train[b].toarray() != 0 for b in ds.behaviors], axis=0)
  counts = (buy[u] @ buy.T) @ buy
  order = [i for i in sorted(range(ds.n_items), key=lambda i: (-counts[i], i)) if not seen[u, i] and counts[i] > 0]
  kept = order[:width]
  floor = counts[kept[-1]] if len(kept) == width else 0.0
  return kept, floor


def reference_features(ds, u, i, loo, left_out=None, unseen=False):
  """x_ui by the definitions of docs/method.md section 4, one pair at a time; `left_out`: the training
  purchase of u a loss row leaves out (its entry among the items the ranks count is taken at its
  leave-one-out statistics, and u's converting count goes without it); `unseen`: the pair as if u had
  never touched i (u's auxiliary pairs on i out of the data, the global conversion shares kept)."""
  aux = [ds.train[b].toarray() != 0 for b in ds.auxiliary]
  buy = ds.train_target.toarray() != 0
  s = evidence.SMOOTHING
  prior = [(a & buy).sum() / a.sum() for a in aux]
  conv_pairs, all_pairs = (np.any(aux, axis=0) & buy).sum(), np.any(aux, axis=0).sum()
  if unseen:  # scored as an item u never touched: u's auxiliary pairs on it out of the data (the priors stay)
    for a in aux:
      a[u, i] = False
  known_u = np.flatnonzero(np.any([a[u] for a in aux], axis=0))
  known = i in known_u
  flags = [float(a[u, i]) if known else 0.0 for a in aux]
  cf_items, floor = reference_collaborative(ds, u)

  def stats(j, out):
    buys = buy[:, j].sum() - out
    shares = [((a[:, j] & buy[:, j]).sum() - out * f + s * p) / (a[:, j].sum() + s)
              for a, f, p in zip(aux, flags if out else [0.0] * len(aux), prior)]
    return [buys] + shares

  # cross-behavior counts, with u's purchase of j taken out of the data itself under leave-one-out
  def cross(j, out):
    left = buy.astype(float)
    left[u, j] -= out
    # Σ_v Σ_l r[u, l] r[v, l] left[v, j]: users v sharing an item l with u (u itself included), who bought j
    return [float((r[u] @ r.T) @ left[:, j]) for r in [a.astype(float) for a in aux] + [left]]

  own = stats(i, loo) + cross(i, loo)
  n_stats = 1 + len(aux)
  x = [np.log1p(own[0])] + own[1:n_stats] + [np.log1p(a[:, i].sum()) for a in aux]
  if not known:
    # cross-behavior counts only for collaborative candidates, and for a left-out purchase that would be one
    has_cross = i in cf_items or (loo and own[-1] > 0 and own[-1] >= floor)
    cross_part = list(np.log1p(own[n_stats:])) if has_cross else [0.0] * len(own[n_stats:])
    return np.array(x + [0.0] * (evidence.n_features(len(aux)) - len(x) - len(cross_part)) + cross_part)
  def entry(j):  # j's statistics as the user's table holds them in this row
    out = float(j == left_out)
    if out == 0:
      return stats(j, 0) + cross(j, 0)
    flags_j = [float(a[u, j]) for a in aux]
    shares = [((a[:, j] & buy[:, j]).sum() - f + s * p) / (a[:, j].sum() + s) for a, f, p in zip(aux, flags_j, prior)]
    return [buy[:, j].sum() - 1] + shares + cross(j, 1)

  others = [entry(j) for j in known_u if j != i]
  ranks = []
  for r, v in enumerate(own):
    o = np.array([st[r] for st in others])
    ranks.append(((o > v).sum() + 0.5 * (o == v).sum()) / max(len(o), 1))
  u_conv = (np.any([a[u] for a in aux], axis=0) & buy[u]).sum()  # as an evaluation row sees it (nothing left out)
  u_conv -= float(left_out is not None and left_out in known_u)  # a loss row: without its purchase
  u_share = (u_conv + s * conv_pairs / all_pairs) / (len(known_u) + s)
  pair = ([1.0] + flags + [np.log1p(a[u].sum()) for a in aux] + [np.log1p(len(known_u)), u_share] + ranks
          + list(np.log1p(own[n_stats:])))
  return np.array(x + pair)


def test_features_equal_loop(tiny):
  _, ds, graphs = tiny
  w = graphs.weak
  buy = ds.train_target.toarray() != 0
  users = np.arange(6)
  items = np.tile(np.arange(ds.n_items), (users.shape[0], 1))
  for loo_value in (0.0, 1.0):
    known, values = evidence.lookup(w, jnp.asarray(users), jnp.asarray(items), purchases=loo_value > 0)
    loo = jnp.where(jnp.asarray(buy[users]), loo_value, 0.0)  # only training purchases are left out
    x = np.asarray(evidence.features(w, jnp.asarray(users), jnp.asarray(items), known, values, loo))
    assert x.shape[-1] == evidence.n_features(2)
    checked_loo = checked_cf = 0
    for b, u in enumerate(users):
      for i in range(ds.n_items):
        out = loo_value * buy[u, i]
        checked_loo += out > 0
        checked_cf += i in reference_collaborative(ds, u)[0]
        np.testing.assert_allclose(x[b, i], reference_features(ds, u, i, out), rtol=1e-5, atol=1e-6,
                                   err_msg=f"user {u} item {i} loo {out}")
    assert loo_value == 0 or checked_loo > 3
    assert checked_cf > 3


def test_loss_row_features_equal_loop(tiny):
  """A loss row (u, p): every candidate of u, and the purchase itself, scored without p (p's entry among
  u's items at its leave-one-out statistics, u's converting count less one), equal the loop."""
  _, ds, graphs = tiny
  w = graphs.weak
  conv = ds.converting_pairs().tocoo()
  rows = [(int(u), int(p)) for u, p in zip(conv.row, conv.col)][::7][:5]
  bought = ds.train_target.toarray() != 0
  for u, p in rows:
    users = jnp.asarray([u])
    items, mask, known, values = (np.asarray(x) for x in evidence.candidates(w, users))
    x = np.asarray(evidence.features(w, users, jnp.asarray(items), jnp.asarray(known), jnp.asarray(values),
                                     jnp.zeros(items.shape), jnp.asarray([p])))
    checked = 0
    for c in np.flatnonzero(mask[0]):
      i = int(items[0, c])
      assert not bought[u, i]  # candidates are never training purchases
      np.testing.assert_allclose(x[0, c], reference_features(ds, u, i, 0.0, left_out=p), rtol=1e-5, atol=1e-6,
                                 err_msg=f"user {u} left out {p} item {i}")
      checked += 1
    assert checked > 3
    known_p, values_p = evidence.lookup(w, users, jnp.asarray([[p]]), purchases=True)
    x_p = evidence.features(w, users, jnp.asarray([[p]]), known_p, values_p, jnp.ones((1, 1)), jnp.asarray([p]))
    np.testing.assert_allclose(np.asarray(x_p)[0, 0], reference_features(ds, u, p, 1.0, left_out=p), rtol=1e-5,
                               atol=1e-6, err_msg=f"purchase ({u}, {p})")


def test_candidate_features_are_the_tables_corrected_for_the_left_out_purchase(tiny):
  """`candidate_features` (the tables built once, corrected for each row's purchase) equals `features`
  computed from the definitions (which the loops above check) for every training purchase as a loss row, in
  one batch, those inside A_u and outside it, and for evaluation rows."""
  _, ds, _ = tiny
  # with a few purchases bought without any auxiliary behavior (the tiny dataset has none)
  untouched = np.argwhere((ds.auxiliary_union().toarray() == 0) & (ds.train_target.toarray() == 0))[::37][:8]
  extra = sp.csr_matrix((np.ones(len(untouched)), (untouched[:, 0], untouched[:, 1])), shape=ds.train_target.shape)
  ds = dataclasses.replace(ds, train={**ds.train, ds.target: binary_csr(ds.train_target + extra)})
  w = evidence.with_evidence_tables(weak_signals(ds, 64, CF))
  target = ds.train_target.tocoo()
  users, pos = jnp.asarray(target.row, jnp.int32), jnp.asarray(target.col, jnp.int32)
  inside = np.asarray(evidence.lookup(w, users, pos[:, None])[0])[:, 0]
  assert inside.sum() > 10 and (~inside).sum() == len(untouched) > 3
  items, _, known, values = evidence.candidates(w, users)
  for left_out in (pos, None):
    direct = evidence.features(w, users, items, known, values, jnp.zeros(items.shape), left_out)
    np.testing.assert_allclose(np.asarray(evidence.candidate_features(w, users, left_out)), np.asarray(direct),
                               rtol=1e-5, atol=1e-6)
  loss_rows = np.asarray(evidence.candidate_features(w, users, pos))
  eval_rows = np.asarray(evidence.candidate_features(w, users))
  changed = np.any(loss_rows != eval_rows, axis=(1, 2))
  assert changed[inside].all() and not changed[~inside].any()  # rows inside A_u change, only they


def test_sampled_softmax_partition_is_unbiased_draws_follow_q_and_contains_equals_isin():
  """`sampled_softmax_loss`: over many draws the mean partition sum equals the one over every item (the
  row's other purchases masked, its candidates scored exactly, the rest from draws of q); `contains` equals
  np.isin row by row; `draw` draws from q, sorted."""
  rng = np.random.default_rng(0)
  n, s = 12, 5
  scores = rng.normal(size=n).astype(np.float32)
  bought, cand = np.array([1, 4, 7]), np.array([0, 5, 9, 10])
  pos = 4
  q = rng.random(n) + 0.2
  q /= q.sum()
  full = np.exp(scores[pos]) + sum(np.exp(scores[i]) for i in range(n) if i not in bought)

  def partition(key):
    drawn = evidence.draw(key, jnp.log(jnp.asarray(q, jnp.float32)), s)
    excluded = (evidence.contains(jnp.asarray(bought)[None], jnp.ones((1, 3), bool), drawn)
                | evidence.contains(jnp.asarray(cand)[None], jnp.ones((1, 4), bool), drawn))
    loss = evidence.sampled_softmax_loss(jnp.asarray(scores[cand])[None], jnp.ones((1, 4), bool),
                                         jnp.asarray(scores[pos])[None], jnp.asarray(scores)[drawn][None],
                                         jnp.log(jnp.asarray(q, jnp.float32))[drawn], excluded)
    return jnp.exp(loss + scores[pos])

  z = np.asarray(jax.jit(jax.vmap(partition))(jax.random.split(jax.random.PRNGKey(0), 40000)))
  assert abs(z.mean() - full) < 4 * z.std() / np.sqrt(z.size) and z.std() > 0
  items = np.stack([rng.permutation(20)[:6] for _ in range(4)])
  mask = rng.random((4, 6)) < 0.7
  values = np.sort(rng.integers(0, 22, 15))  # repeats, and values no row holds
  want = np.stack([np.isin(values, items[b][mask[b]]) for b in range(4)])
  got = evidence.contains(jnp.asarray(items, jnp.int32), jnp.asarray(mask), jnp.asarray(values, jnp.int32))
  np.testing.assert_array_equal(np.asarray(got), want)
  assert want.any() and not want.all()
  drawn = np.asarray(evidence.draw(jax.random.PRNGKey(1), jnp.log(jnp.asarray(q, jnp.float32)), 20000))
  assert np.all(np.diff(drawn) >= 0)
  np.testing.assert_allclose(np.bincount(drawn, minlength=n) / drawn.size, q, atol=0.01)


@pytest.mark.parametrize("width, one_user_chunks", [(CF, False), (30, False), (CF, True)])
def test_collaborative_candidates_equal_loop(tiny, width, one_user_chunks):
  _, ds, _ = tiny
  # one user per chunk: every chunk boundary, the chunks shared among the host threads
  items, mask, floor = collaborative_candidates(ds, width, **({"chunk_cells": 1} if one_user_chunks else {}))
  full = 0
  for u in range(ds.n_users):
    kept, want_floor = reference_collaborative(ds, u, width)
    assert items[u][mask[u]].tolist() == kept, f"user {u}"
    assert floor[u] == want_floor
    full += len(kept) == width
  assert full == ds.n_users if width == CF else full == 0  # both sides of the floor


@pytest.mark.parametrize("chunk_cells", [1, 2**24])
def test_cross_counts_equal_dense_products(tiny, chunk_cells):
  """(R_k R_kᵀ R_target)[u, i] read at given pairs, in one-user chunks over the host threads or in one chunk."""
  _, ds, _ = tiny
  rng = np.random.default_rng(0)
  rows = rng.integers(0, ds.n_users, 300)
  cols = rng.integers(0, ds.n_items, 300)
  got = cross_counts(ds, rows, cols, chunk_cells=chunk_cells)
  target = (ds.train_target.toarray() != 0).astype(np.float64)
  for k, b in enumerate(ds.behaviors):
    r_k = (ds.train[b].toarray() != 0).astype(np.float64)
    np.testing.assert_array_equal(got[:, k], (r_k @ r_k.T @ target)[rows, cols])
  assert (got > 0).any(axis=0).all()


def test_softmax_loss_equals_loop():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(3, 7)).astype(np.float32)
  bought = np.zeros((3, 7), bool)
  bought[0, [1, 2]] = bought[1, 4] = bought[2, [0, 5, 6]] = True
  pos = np.array([2, 4, 0])
  pos_scores = rng.normal(size=3).astype(np.float32)
  from hnt_jax.graph import user_rows
  import scipy.sparse as sp
  got = float(evidence.softmax_loss(jnp.asarray(scores), jnp.asarray(pos_scores), jnp.arange(3),
                                    jnp.asarray(pos), user_rows(sp.csr_matrix(bought.astype(np.float32)))))
  want = []
  for b in range(3):
    logits = [pos_scores[b]] + [scores[b, j] for j in range(7) if not bought[b, j]]
    want.append(np.log(np.sum(np.exp(logits))) - pos_scores[b])
  assert got == pytest.approx(np.mean(want), rel=1e-5)


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("name", ["pair_ranker", "hnt"])
def test_full_ranking_scores_are_the_pair_scores(tiny, name, standardize):
  """Every item's score in `score` (all items at once, the candidates scattered) is the scorer on that
  pair's own evidence (standardized by the candidates' moments, computed here in NumPy, where the model
  standardizes), plus for HNT cos(z_u, z_i) / τ_cf; training purchases get item evidence only."""
  cfg, ds, graphs = tiny
  cfg = cfg.copy_and_resolve_references()
  cfg.model.name = name
  if name == "hnt":
    cfg.model.hnt.scorer_standardize = standardize
  else:
    cfg.model.pair_ranker.standardize = standardize
  model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
  variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs,
                         dummy_batch(), method=model.loss)
  emb = model.apply(variables, graphs, method=model.embed)
  users = jnp.arange(ds.n_users)
  scores = np.asarray(model.apply(variables, graphs, emb, users, method=model.score))
  params = variables["params"]
  scorer = evidence.PairScorer(hidden=model.scorer_hidden if name == "hnt" else model.hidden,
                               layers=model.scorer_layers if name == "hnt" else model.layers)
  buy = ds.train_target.toarray() != 0
  mean, std = 0.0, 1.0
  if standardize:
    _, mask, _, _ = evidence.candidates(graphs.weak, users)
    table = np.asarray(graphs.weak.cand_features)[np.asarray(mask)]  # [every candidate, n_features]
    mean, std = table.mean(axis=0), table.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    assert (std != 1.0).sum() > 10  # most features vary over the candidates
  for u in range(8):
    items = jnp.arange(ds.n_items)[None]
    known, values = evidence.lookup(graphs.weak, jnp.asarray([u]), items)
    bought = jnp.asarray(buy[u])[None]  # purchases are masked: scored without pair evidence
    known, values = known & ~bought, values * ~bought[..., None]
    x = evidence.features(graphs.weak, jnp.asarray([u]), items, known, values, jnp.zeros(items.shape))
    want = np.asarray(scorer.apply({"params": params["scorer"]}, (np.asarray(x) - mean) / std))[0]
    if name == "hnt":
      zu = np.asarray(emb.users[u]) / np.linalg.norm(np.asarray(emb.users[u]))
      zi = np.asarray(emb.items) / np.linalg.norm(np.asarray(emb.items), axis=1, keepdims=True)
      want = want + zi @ zu / model.cf_temperature
    np.testing.assert_allclose(scores[u], want, rtol=1e-4, atol=1e-5)
  assert np.asarray(graphs.weak.cand_mask[:8]).any() and np.asarray(graphs.weak.cf_mask[:8]).any()


def test_pair_ranker_gradients_are_finite_and_reach_the_scorer(tiny):
  cfg, ds, graphs = tiny
  cfg = cfg.copy_and_resolve_references()
  cfg.model.name = "pair_ranker"
  model = get_model(cfg.model, ds.n_users, ds.n_items, 3)
  variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs,
                         dummy_batch(), method=model.loss)
  grads = jax.grad(lambda p: model.apply({"params": p}, graphs, dummy_batch(seed=3), method=model.loss,
                                         rngs={"sample": jax.random.PRNGKey(0)})[0])(variables["params"])
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
  assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree_util.tree_leaves(grads))


def test_loss_rows_see_the_user_as_evaluation_would_without_the_purchase(tiny):
  """In the row of a left-out purchase (u, j) ∈ A_u, the user's converting count that every item sees (the
  purchase and the candidates, read through the scoring paths the losses use) equals the count on the data
  that never had the purchase; evaluation rows keep the whole count. (The count is read back from the
  smoothed share, each dataset with its own prior.)"""
  import dataclasses
  import scipy.sparse as sp
  from hnt_jax.data.dataset import binary_csr
  _, ds, graphs = tiny
  w, s = graphs.weak, evidence.SMOOTHING
  conv = ds.converting_pairs().tocoo()
  u, j = int(conv.row[0]), int(conv.col[0])
  held = sp.csr_matrix(([1.0], ([u], [j])), shape=ds.train_target.shape)
  train = dict(ds.train); train[ds.target] = binary_csr(ds.train_target - held)
  w2 = weak_signals(dataclasses.replace(ds, train=train), 64, CF)
  share = lambda x, *_: x[..., 11]  # a "scorer" that returns the user's smoothed conversion share (K-1 = 2)

  def converted(x):
    return np.asarray(x) * (float(w.user_conv[u, 1]) + s) - s * float(w.conv_prior[-1])

  users, items = jnp.asarray([u]), jnp.asarray([j])
  left_out = items  # the purchase the loss row leaves out
  want = float(w2.user_conv[u, 0])
  assert want == float(w.user_conv[u, 0]) - 1
  np.testing.assert_allclose(converted(evidence.purchase_scores(share, w, users, items))[0], want, atol=1e-4)
  _, cand_mask, cand_known, _ = evidence.candidates(w, users)
  in_a = np.asarray(cand_known[0] & cand_mask[0])
  assert in_a.any()
  row = converted(evidence.candidate_scores(share, w, users, left_out))[0]
  np.testing.assert_allclose(row[in_a], want, atol=1e-4)
  np.testing.assert_allclose(converted(evidence.candidate_scores(share, w, users))[0][in_a], want + 1, atol=1e-4)


def test_unseen_purchase_is_scored_as_an_item_never_touched(tiny):
  """A training purchase in A_u scored `unseen` has the features of an item its user never touched: the
  reference computes them on the data without u's auxiliary pairs on it (no pair evidence, its item counts
  and cross-behavior counts without u's pairs, the latter only where it would be a collaborative candidate),
  its own purchase left out; the others keep theirs."""
  _, ds, graphs = tiny
  w = graphs.weak
  conv = ds.converting_pairs().tocoo()
  picks = np.linspace(0, conv.nnz - 1, 6).astype(int)
  users, items = jnp.asarray(conv.row[picks]), jnp.asarray(conv.col[picks])
  identity = lambda x, *_: x  # noqa: E731  (a "scorer" that returns the features)
  unseen = jnp.asarray([True, False] * 3)
  x = np.asarray(evidence.purchase_scores(identity, w, users, items, unseen))
  seen = np.asarray(evidence.purchase_scores(identity, w, users, items))
  cross = x[np.asarray(unseen), -3:]
  assert (cross > 0).any() and (cross == 0).all(axis=1).any()  # kept as a collaborative candidate, and not
  for b, (u, i) in enumerate(zip(conv.row[picks], conv.col[picks])):
    want = reference_features(ds, int(u), int(i), 1.0, left_out=int(i), unseen=bool(unseen[b]))
    np.testing.assert_allclose(x[b], want, rtol=1e-5, atol=1e-6, err_msg=f"user {u} item {i}")
    pair = 1 + 2 * 2  # the item's columns come first (K-1 = 2)
    assert (x[b, pair] == 0) == bool(unseen[b]) and seen[b, pair] == 1  # "in A_u"


@pytest.mark.parametrize("name", ["pair_ranker", "hnt"])
def test_unseen_purchases_share_picks_the_rows_scored_as_never_touched(tiny, name):
  """`unseen_purchases` = 1 scores every row's purchase as never touched, 0 none (and draws nothing): the
  loss is the one with `purchase_scores(..., unseen)` for those rows, which differs from the default."""
  cfg, ds, graphs = tiny
  batch = dummy_batch(seed=3)
  assert np.asarray(ds.converting_pairs()[np.asarray(batch["users"]), np.asarray(batch["pos"])]).any()
  losses = {}
  for share in (0.0, 1.0):
    c = cfg.copy_and_resolve_references()
    c.model.name = name
    c.model[name].unseen_purchases = share
    model = get_model(c.model, ds.n_users, ds.n_items, 3)
    variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, graphs,
                           dummy_batch(), method=model.loss)
    losses[share] = float(model.apply(variables, graphs, batch, method=model.loss,
                                      rngs={"sample": jax.random.PRNGKey(5)})[0])
    if name == "pair_ranker":  # the loss by hand, with every row's purchase unseen (share 1) or none
      weak, users, pos = graphs.weak, batch["users"], batch["pos"]
      unseen = jnp.ones(users.shape, bool) if share else None
      scorer = lambda x, *a: model.apply(variables, x, *a, method=lambda m, *b: m.scorer(*b))  # noqa: E731
      base = jnp.broadcast_to(evidence.item_scores(scorer, weak)[None, :], (users.shape[0], ds.n_items))
      scores = evidence.scatter_candidates(weak, base, evidence.candidate_scores(scorer, weak, users, pos), users)
      want = evidence.softmax_loss(scores, evidence.purchase_scores(scorer, weak, users, pos, unseen), users, pos,
                                   graphs.target.rows)
      np.testing.assert_allclose(losses[share], float(want), rtol=1e-5)
  assert np.isfinite(list(losses.values())).all() and abs(losses[1.0] - losses[0.0]) > 1e-4
