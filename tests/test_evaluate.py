"""The evaluator equals a plain NumPy reference: ties against the ground truth, several held-out items,
users without held-out items, masks, both protocols, the observed/unobserved split, any chunk size."""
import ml_collections
import numpy as np
import pytest
import scipy.sparse as sp

from hnt_jax.data.dataset import Dataset
from hnt_jax.errors import ConfigError
from hnt_jax.evaluate import Evaluator, eval_split, rank_metrics, sample_negatives

KS = (1, 3, 5)


def reference(scores_row, truth, candidates, ks):
  """Metrics of one user: candidates ordered by score, ties broken against held-out items."""
  cand = sorted(candidates, key=lambda j: (-scores_row[j], j in truth))
  pos = {j: p for p, j in enumerate(cand)}
  out = {}
  for k in ks:
    hits = [pos[g] for g in truth if pos[g] < k]
    idcg = sum(1 / np.log2(p + 2) for p in range(min(len(truth), k)))
    out[f"hr@{k}"] = float(bool(hits))
    out[f"ndcg@{k}"] = sum(1 / np.log2(p + 2) for p in hits) / idcg
    out[f"recall@{k}"] = len(hits) / len(truth)
  return out


def toy_dataset(seed=0, m=13, n=17):
  rng = np.random.default_rng(seed)
  target = sp.csr_matrix((rng.random((m, n)) < 0.2).astype(np.float32))
  view = sp.csr_matrix((rng.random((m, n)) < 0.3).astype(np.float32))
  free = (target.toarray() == 0)
  test = np.zeros((m, n), np.float32)
  for u in range(m - 2):  # the last two users have no test item
    items = rng.permutation(np.flatnonzero(free[u]))[:rng.integers(1, 4)]
    test[u, items] = 1
  return Dataset(name="toy", n_users=m, n_items=n, behaviors=("view", "buy"),
                 train={"view": view, "buy": target}, valid=None, test=sp.csr_matrix(test),
                 info={"split": "published"})


def eval_cfg(protocol="full", chunk_cells=1 << 20):
  return ml_collections.ConfigDict(dict(protocol=protocol, ks="1,3,5", chunk_cells=chunk_cells,
                                        n_negatives=5, sample_seed=0))


def run_evaluator(ds, scores, protocol="full", chunk_cells=1 << 20):
  ev = Evaluator(ds, "test", eval_cfg(protocol, chunk_cells), lambda st, users: st[users])
  import jax.numpy as jnp
  return ev, ev(jnp.asarray(scores))


def expected(ds, scores, candidates_of, group="all"):
  es = eval_split(ds, "test")
  observed = ds.train["view"].toarray() > 0
  per_user = []
  for u in es.users:
    truth_all = set(ds.test[u].indices.tolist())
    obs = {g for g in truth_all if observed[u, g]}
    truth = {"all": truth_all, "observed": obs, "unobserved": truth_all - obs}[group]
    if not truth:
      continue
    cands = candidates_of(u) - (truth_all - truth)
    per_user.append(reference(scores[u], truth, cands, KS))
  return {k: np.mean([p[k] for p in per_user]) for k in per_user[0]}, len(per_user)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_cells", [17 * 4 * 2, 1 << 20, 0])  # several chunks, one, the default
def test_full_protocol_equals_reference_with_ties(seed, chunk_cells):
  ds = toy_dataset(seed)
  rng = np.random.default_rng(seed + 10)
  scores = rng.integers(0, 4, size=(ds.n_users, ds.n_items)).astype(np.float32)  # many ties
  _, got = run_evaluator(ds, scores, chunk_cells=chunk_cells)
  train = ds.train["buy"].toarray() > 0
  for group in ("all", "observed", "unobserved"):
    want, users = expected(ds, scores, lambda u: set(np.flatnonzero(~train[u]).tolist()), group)
    prefix = "" if group == "all" else f"{group}/"
    assert got[f"{prefix}users"] == users
    for name, value in want.items():
      assert got[prefix + name] == pytest.approx(value, abs=1e-6), (group, name)


def test_sampled_protocol_equals_reference():
  ds = toy_dataset(4, m=11, n=40)
  rng = np.random.default_rng(5)
  scores = rng.integers(0, 5, size=(ds.n_users, ds.n_items)).astype(np.float32)
  ev, got = run_evaluator(ds, scores, protocol="sampled")
  negs = np.asarray(ev.negatives).reshape(-1, 5)
  users = eval_split(ds, "test").users
  forbidden = (ds.train["buy"] + ds.test).toarray() > 0
  for r, u in enumerate(users):
    assert len(set(negs[r])) == 5 and not forbidden[u, negs[r]].any()
  by_user = {u: set(negs[r].tolist()) for r, u in enumerate(users)}
  want, _ = expected(ds, scores, lambda u: by_user[u] | set(ds.test[u].indices.tolist()))
  for name, value in want.items():
    assert got[name] == pytest.approx(value, abs=1e-6), name


def test_constant_scores_get_zero_and_the_answer_gets_one():
  ds = toy_dataset(7)
  _, const = run_evaluator(ds, np.zeros((ds.n_users, ds.n_items), np.float32))
  assert const["hr@1"] == 0 and const["ndcg@1"] == 0
  oracle = ds.test.toarray().astype(np.float32)
  _, perfect = run_evaluator(ds, oracle)
  assert perfect["hr@1"] == 1 and perfect["ndcg@5"] == pytest.approx(1.0)
  assert perfect["recall@5"] == pytest.approx(1.0)


def test_training_items_are_masked_and_validation_masked_at_test_time():
  ds = toy_dataset(8)
  valid = np.zeros((ds.n_users, ds.n_items), np.float32)
  train = ds.train["buy"].toarray()
  test = ds.test.toarray()
  for u in range(ds.n_users):
    free = np.flatnonzero((train[u] == 0) & (test[u] == 0))
    valid[u, free[0]] = 1
  ds.valid = sp.csr_matrix(valid)
  ds.info["split"] = "holdout_valid"
  es = eval_split(ds, "test")
  assert ((es.exclude.toarray() > 0) == ((train + valid) > 0)).all()
  # scoring training and validation items highest must not hurt: they are masked
  scores = train * 10 + valid * 10 + test
  _, got = run_evaluator(ds, scores.astype(np.float32))
  assert got["hr@1"] == 1


def test_rank_metrics_ignores_padding():
  import jax.numpy as jnp
  scores = jnp.asarray([[0.0, 3.0, 1.0, 2.0]])
  out = rank_metrics(scores, jnp.asarray([[1, 0]]), jnp.asarray([[True, False]]), (1,))
  assert float(out["hr@1"][0]) == 1.0 and float(out["weight"][0]) == 1.0


def test_negative_sampling_is_reproducible():
  excl = sp.csr_matrix(np.eye(5, 50, dtype=np.float32))
  a = sample_negatives(50, np.arange(5), excl, 10, seed=3)
  b = sample_negatives(50, np.arange(5), excl, 10, seed=3)
  assert np.array_equal(a, b)
  assert not any(u in a[u] for u in range(5))


def test_empty_group_has_no_metrics_rather_than_nan():
  ds = toy_dataset(9)
  ds.train["view"] = sp.csr_matrix((ds.n_users, ds.n_items), dtype=np.float32)
  _, got = run_evaluator(ds, np.zeros((ds.n_users, ds.n_items), np.float32))
  assert got["observed/users"] == 0 and "observed/hr@1" not in got
  assert got["unobserved/users"] == got["users"] and not any(np.isnan(v) for v in got.values())


def test_bad_evaluation_settings_are_named():
  ds = toy_dataset()
  with pytest.raises(ConfigError, match="eval.chunk_cells=-1"):
    Evaluator(ds, "test", eval_cfg(chunk_cells=-1), lambda st, users: st[users])
  with pytest.raises(ConfigError, match="eval.protocol=.top."):
    Evaluator(ds, "test", eval_cfg(protocol="top"), lambda st, users: st[users])
