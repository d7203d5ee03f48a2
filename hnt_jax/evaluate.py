"""Ranking evaluation: the `full` and `sampled` protocols of docs/method.md section 5.

* `full`: every item is scored for every evaluated user (on device, in chunks of users whose size follows
  `eval.chunk_cells`, not the catalogue size); the user's training target items are masked
  (and, at test time, validation items when they were held out of training).
* `sampled`: each user's held-out items against 99 items drawn uniformly, with a fixed seed, among the
  items the user never interacted with in the training target.

Ties are counted against the ground truth: a held-out item's position is the number of other candidates
scoring at least as high, so a constant-score model gets ≈ 0. Several ground-truth items per user are
allowed (NDCG's ideal DCG covers min(|GT|, K) positions). Metrics are reported overall and split by whether
the held-out item was observed in an auxiliary behavior of that user ("observed" / "unobserved"; for the
split metrics, the user's other held-out items are left out of the ranking).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from hnt_jax import distributed
from hnt_jax.data.dataset import Dataset
from hnt_jax.errors import ConfigError
from hnt_jax.graph import user_rows

PROTOCOLS = ("full", "sampled")
GROUPS = ("all", "observed", "unobserved")


def default_chunk_cells(platform: str | None = None) -> int:
  """`eval.chunk_cells` when the config leaves it at 0. On CPU, 2**23 cells: a chunk's score block stays
  below 32 MB, in cache and reused by the allocator rather than page-faulted anew; on Taobao this took
  the scoring of all test users from 1.4-1.5 s to 0.6-0.8 s on 2 cores (docs/performance.md). Accelerators
  get 2**25 (fewer, larger chunks)."""
  return 1 << 23 if (platform or jax.default_backend()) == "cpu" else 1 << 25


def parse_ks(ks) -> tuple[int, ...]:
  values = tuple(int(k) for k in str(ks).split(",") if k.strip())
  if not values or min(values) < 1:
    raise ValueError(f"eval.ks={ks!r}: expected a comma-separated list of positive integers")
  return values


def rank_metrics(scores: jax.Array, gt_items: jax.Array, gt_mask: jax.Array, ks: Sequence[int]
                 ) -> dict[str, jax.Array]:
  """Per-user HR@K, NDCG@K, Recall@K for a block of users.

  scores: [B, N], masked candidates at -inf. gt_items / gt_mask: [B, G] held-out items and which are real.
  Returns arrays of shape [B] per metric name, and "weight" (1 for users with at least one item).
  """
  s_g, ge_all = _scores_at_and_counts(scores, gt_items)
  return _metrics(_gt_positions(ge_all, s_g, gt_mask, gt_mask), gt_mask, ks)


def _scores_at_and_counts(scores: jax.Array, gt_items: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each held-out item's score [B, G], and how many candidates score at least as high (itself included)."""
  s_g = jnp.take_along_axis(scores, gt_items, axis=1)
  return s_g, jnp.sum(scores[:, None, :] >= s_g[:, :, None], axis=-1)


def _gt_positions(ge_all: jax.Array, s_g: jax.Array, ranked: jax.Array, keep: jax.Array) -> jax.Array:
  """0-based positions of the held-out items of a group among the candidates, ties against them.

  `ge_all` counts candidates scoring at least as high, including the held-out items in `ranked`; the
  held-out items of the group (`keep`) occupy one consecutive block in a fixed order, those outside it
  leave the ranking. So: the other candidates at least as high, plus the group's items ranked before."""
  s_h, s_gg = s_g[:, None, :], s_g[:, :, None]
  ranked_ge = jnp.sum(ranked[:, None, :] & (s_h >= s_gg), axis=-1)
  keep_h = keep[:, None, :]
  gt_gt = jnp.sum(keep_h & (s_h > s_gg), axis=-1)
  g_idx = jnp.arange(s_g.shape[1])
  tie_before = jnp.sum(keep_h & (s_h == s_gg) & (g_idx[None, None, :] < g_idx[None, :, None]), axis=-1)
  return ge_all - ranked_ge + gt_gt + tie_before


def _metrics(pos: jax.Array, gt_mask: jax.Array, ks: Sequence[int]) -> dict[str, jax.Array]:
  n_gt = gt_mask.sum(axis=1)
  out = {"weight": (n_gt > 0).astype(jnp.float32)}
  for k in ks:
    hit = gt_mask & (pos < k)
    dcg = jnp.sum(jnp.where(hit, 1.0 / jnp.log2(pos + 2.0), 0.0), axis=1)
    ideal = jnp.cumsum(1.0 / jnp.log2(jnp.arange(k) + 2.0))
    idcg = ideal[jnp.clip(jnp.minimum(n_gt, k) - 1, 0, k - 1)]
    out[f"hr@{k}"] = jnp.any(hit, axis=1).astype(jnp.float32)
    out[f"ndcg@{k}"] = jnp.where(n_gt > 0, dcg / idcg, 0.0)
    out[f"recall@{k}"] = jnp.where(n_gt > 0, hit.sum(axis=1) / jnp.maximum(n_gt, 1), 0.0)
  return out


def sample_negatives(n_items: int, users: np.ndarray, exclude: sp.csr_matrix, n: int, seed: int,
                     chunk_cells: int = 1 << 24) -> np.ndarray:
  """[U, n] distinct items per user drawn uniformly among those not in `exclude[user]` (fixed seed)."""
  rng = np.random.default_rng(seed)
  out = np.zeros((users.shape[0], n), np.int32)
  chunk = max(1, chunk_cells // n_items)
  for start in range(0, users.shape[0], chunk):
    u = users[start:start + chunk]
    keys = rng.random((u.shape[0], n_items), dtype=np.float32)
    rows = exclude[u]
    keys[np.repeat(np.arange(u.shape[0]), np.diff(rows.indptr)), rows.indices] = 2.0
    allowed = (keys < 2.0).sum(axis=1)
    if (allowed < n).any():
      raise ConfigError(f"eval.n_negatives={n}: user {int(u[np.argmax(allowed < n)])} (0-based) has only "
                        f"{int(allowed.min())} items left to sample negatives from ({n_items} items, "
                        "minus the user's purchases and held-out items); lower eval.n_negatives")
    out[start:start + chunk] = np.argpartition(keys, n - 1, axis=1)[:, :n]
  return out


@dataclasses.dataclass
class EvalSplit:
  """Host-side description of one evaluation split, computed once."""
  users: np.ndarray  # [U] evaluated users
  truth: sp.csr_matrix  # held-out items
  observed: sp.csr_matrix  # the held-out items observed in an auxiliary behavior of the user
  exclude: sp.csr_matrix  # items masked from ranking


def eval_split(ds: Dataset, split: str) -> EvalSplit:
  truth = ds.valid if split == "valid" else ds.test
  if truth is None:
    raise ValueError(f"dataset {ds.name!r} has no {split} split")
  exclude = ds.train_target
  if split == "test" and ds.valid is not None and ds.info.get("split") == "holdout_valid":
    exclude = ((exclude + ds.valid) > 0).astype(np.float32)
  exclude = sp.csr_matrix(exclude)
  # a held-out item is never masked from its own ranking
  exclude = sp.csr_matrix(exclude - exclude.multiply(truth))
  exclude.eliminate_zeros()
  observed = truth.multiply(ds.auxiliary_union()) if ds.auxiliary else truth.multiply(0)
  return EvalSplit(users=ds.evaluated_users(split), truth=sp.csr_matrix(truth),
                   observed=sp.csr_matrix(observed), exclude=exclude)


class Evaluator:
  """Scores users in fixed-size chunks with one compiled program and averages ranking metrics.

  `score_fn(state, users) -> [B, N]` scores a chunk of users from whatever `state` the caller computed
  once per evaluation (embeddings, for most models).
  """

  def __init__(self, ds: Dataset, split: str, eval_cfg, score_fn: Callable[[Any, jax.Array], jax.Array],
               mesh=None):
    if eval_cfg.protocol not in PROTOCOLS:
      raise ConfigError(f"eval.protocol={eval_cfg.protocol!r} is not one of {', '.join(PROTOCOLS)}")
    self.split, self.protocol = split, eval_cfg.protocol
    self.ks = parse_ks(eval_cfg.ks)
    self.n_items = ds.n_items
    es = eval_split(ds, split)
    self.n_users = int(es.users.shape[0])
    truth_rows = user_rows(es.truth)
    g = max(truth_rows.max_degree, 1)
    if int(eval_cfg.chunk_cells) < 0:
      raise ConfigError(f"eval.chunk_cells={eval_cfg.chunk_cells} must be at least 0 (0: the default)")
    cells = int(eval_cfg.chunk_cells) or default_chunk_cells()
    self.chunk = int(max(1, min(self.n_users, cells // (ds.n_items * (g + 1)))))
    # on a mesh each chunk's users are split over `data`; the memory budget is then per device
    self.mesh, d = mesh, distributed.data_size(mesh)
    self.chunk = -(-self.chunk // d) * d
    n_chunks = -(-self.n_users // self.chunk)
    padded = np.zeros(n_chunks * self.chunk, np.int32)
    padded[:self.n_users] = es.users
    self.users = jnp.asarray(padded.reshape(n_chunks, self.chunk))
    self.valid_user = jnp.asarray((np.arange(padded.shape[0]) < self.n_users).reshape(n_chunks, self.chunk))
    self.truth = truth_rows
    self.observed = user_rows(es.observed)
    self.exclude = user_rows(es.exclude)
    self.negatives = None
    if self.protocol == "sampled":
      excl = sp.csr_matrix(((ds.train_target + es.truth) > 0).astype(np.float32))
      negs = sample_negatives(ds.n_items, padded, excl, int(eval_cfg.n_negatives), int(eval_cfg.sample_seed))
      self.negatives = jnp.asarray(negs.reshape(n_chunks, self.chunk, -1))
    self._chunk_fn = jax.jit(self._make_chunk_fn(score_fn))

  def _make_chunk_fn(self, score_fn):
    ks, sampled = self.ks, self.protocol == "sampled"

    def chunk_fn(state, users, valid_user, negatives, truth, observed, exclude):
      scores = score_fn(state, users).astype(jnp.float32)
      gt_items, gt_mask = truth.padded(users)
      gt_mask = gt_mask & valid_user[:, None]
      rows = jnp.arange(users.shape[0])[:, None]
      if sampled:
        allowed = jnp.zeros(scores.shape, bool).at[rows, negatives].set(True)
        allowed = allowed.at[rows, gt_items].max(gt_mask)
        scores = jnp.where(allowed, scores, -jnp.inf)
      else:  # the excluded items leave the ranking (held-out items are never excluded)
        ex_items, ex_mask = exclude.padded(users)
        scores = scores.at[rows, jnp.where(ex_mask, ex_items, self.n_items)].set(-jnp.inf, mode="drop")
      obs_items, obs_mask = observed.padded(users)
      gt_obs = jnp.any((gt_items[:, :, None] == obs_items[:, None, :]) & obs_mask[:, None, :], axis=-1)
      gt_obs = gt_obs & gt_mask
      # one pass over the candidates for every group: groups differ only in their held-out items
      s_g, ge_all = _scores_at_and_counts(scores, gt_items)
      out = {}
      for group, keep in (("all", gt_mask), ("observed", gt_obs), ("unobserved", gt_mask & ~gt_obs)):
        metrics = _metrics(_gt_positions(ge_all, s_g, gt_mask, keep), keep, ks)
        weight = metrics.pop("weight")
        out[group] = {name: jnp.sum(value * weight) for name, value in metrics.items()}
        out[group]["weight"] = jnp.sum(weight)
      return out

    return chunk_fn

  def __call__(self, state) -> dict[str, float]:
    totals = None
    for c in range(self.users.shape[0]):
      negs = self.negatives[c] if self.negatives is not None else jnp.zeros((self.chunk, 1), jnp.int32)
      users, valid = self.users[c], self.valid_user[c]
      if self.mesh is not None:
        users, valid, negs = (distributed.put_global(x, distributed.rows_sharding(self.mesh, x.ndim))
                              for x in (users, valid, negs))
      out = self._chunk_fn(state, users, valid, negs, self.truth, self.observed, self.exclude)
      totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    result: dict[str, float] = {}
    for group in GROUPS:
      weight = float(totals[group]["weight"])
      prefix = "" if group == "all" else f"{group}/"
      result[f"{prefix}users"] = int(weight)
      if not weight:  # no user in this group: no metrics (never NaN in results files)
        continue
      for name, value in totals[group].items():
        if name != "weight":
          result[prefix + name] = float(value) / weight
    return result
