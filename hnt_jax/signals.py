"""Weak signals of a multi-behavior dataset, built once on the host for the models that read them.

Converting pairs C (auxiliary pairs that also have the target in training) and weak-signal pairs W
(auxiliary pairs that never converted), each user's weak-signal candidates and converting pairs as padded
tables, and conversion statistics. HNT builds them (`HNT.graph_extras`); any model's extra loss can have
them with `Run(config, weak_signals=True)`. They land in `Graphs.weak`.
"""
from __future__ import annotations

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from hnt_jax.data.dataset import Dataset, binary_csr
from hnt_jax.distributed import split_rows
from hnt_jax.host import host_threads, parallel_chunks


@flax.struct.dataclass
class WeakSignals:
  """Converting (C) and weak-signal (W) auxiliary pairs, per-user weak-signal candidates, statistics.

  Aux flags are float [.., K-1] (which auxiliary behaviors the pair has). `item_stats` holds per item
  [log(1 + purchases), smoothed share of its auxiliary pairs that converted]; `user_stats` the user's
  smoothed converted share. Candidates: for each user up to C weak-signal items, those with the most
  auxiliary behaviors first (ties: lower item id), padded, with a mask. `conv_table_*` holds each user's
  converting pairs the same way (so that any (user, item) pair's auxiliary flags can be looked up).
  """
  conv_users: jax.Array  # [|C|]
  conv_items: jax.Array
  conv_aux: jax.Array  # [|C|, K-1]
  weak_users: jax.Array  # [|W|]
  weak_items: jax.Array
  weak_aux: jax.Array  # [|W|, K-1]
  cand_items: jax.Array  # [M, C] int32 (0 where padded)
  cand_mask: jax.Array  # [M, C] bool
  cand_aux: jax.Array  # [M, C, K-1]
  cand_flat: jax.Array  # [number of real candidates] int32: user * C + slot of each, in order
  conv_table_items: jax.Array  # [M, C'] int32 (0 where padded)
  conv_table_mask: jax.Array  # [M, C'] bool
  conv_table_aux: jax.Array  # [M, C', K-1]
  item_stats: jax.Array  # [N, 2]
  user_stats: jax.Array  # [M, 1]
  # raw training counts, for the pair evidence (hnt_jax.models.evidence), which removes a training pair's
  # own purchase from them (leave-one-out)
  item_counts: jax.Array  # [N, K]: users with each behavior on the item (auxiliary behaviors, then target)
  item_conv: jax.Array  # [N, K-1]: users with auxiliary behavior k on the item who also bought it
  user_counts: jax.Array  # [M, K]: items per behavior of the user
  user_conv: jax.Array  # [M, 2]: the user's converting pairs, and auxiliary pairs
  conv_prior: jax.Array  # [K]: share of auxiliary-k pairs that converted (k < K-1), and of all
  # cross-behavior collaboration of each candidate / converting pair, per behavior k of the user:
  # (R_k R_kᵀ R_target)[u, i], the purchases of i by users who share behavior-k items with u, each weighted by
  # the number of items shared (u itself included: a training purchase has its own part removed by the
  # evidence's leave-one-out)
  cand_cross: jax.Array  # [M, C, K]
  conv_cross: jax.Array  # [M, C', K]
  # collaborative candidates: per user, up to F items the user has no training pair with (no behavior),
  # those most bought by users who bought what u bought ((R_target R_targetᵀ R_target)[u, i] > 0, largest
  # first, ties to the lower item id), with their cross-behavior counts; `cf_floor` is the smallest kept
  # count where the row is full (0 otherwise: every item with a count is in it)
  cf_items: jax.Array  # [M, F] int32 (0 where padded)
  cf_mask: jax.Array  # [M, F] bool
  cf_cross: jax.Array  # [M, F, K]
  cf_floor: jax.Array  # [M]
  # the training purchases outside A_u (bought without any auxiliary behavior), with their cross-behavior
  # counts, for the leave-one-out evidence of those purchases
  buy_items: jax.Array  # [M, C''] int32 (0 where padded)
  buy_mask: jax.Array  # [M, C''] bool
  buy_cross: jax.Array  # [M, C'', K]
  # the ranked statistics of each user's A_u items (cand_* then conv_table_*), each sorted ascending over
  # the items (+inf where padded), [M, C + C', R]: filled once by
  # hnt_jax.models.evidence.with_evidence_tables, whose definitions they follow, so that no training step or
  # evaluation sorts them again
  known_sorted: Optional[jax.Array] = None
  # every user's `evidence.candidates` as evaluation sees them (nothing left out): their features x_ui
  # [M, C + F, n_features] and the statistics their ranks compare [M, C + F, R], filled once by the same
  # function; a loss row's features are these with its left-out purchase corrected for
  # (`evidence.candidate_features`)
  cand_features: Optional[jax.Array] = None
  cand_stats: Optional[jax.Array] = None
  # the mean and the standard deviation (1 where constant) of each feature over every user's candidates as
  # evaluation sees them, [n_features] each: the pair scorer's inputs are standardized by them
  # (`evidence.score_pairs`); filled by the same function
  feature_mean: Optional[jax.Array] = None
  feature_std: Optional[jax.Array] = None


# the tables with one row per user, [M, ...]: read a batch of users at a time, so on a device mesh they are
# split by users over `data` (`split_by_users`); the pair lists and the item tables stay whole
USER_TABLES = ("cand_items", "cand_mask", "cand_aux", "conv_table_items", "conv_table_mask", "conv_table_aux",
               "user_stats", "user_counts", "user_conv", "cand_cross", "conv_cross", "cf_items", "cf_mask",
               "cf_cross", "cf_floor", "buy_items", "buy_mask", "buy_cross", "known_sorted", "cand_features",
               "cand_stats")


def split_by_users(weak: WeakSignals, mesh) -> WeakSignals:
  """`weak` on a device mesh: each of its `USER_TABLES` split by users over `data`, so a device holds 1/D of
  them (`distributed.split_rows`: the rows are padded to a multiple of D, which makes the tables longer than
  M; whatever covers every user reads them through `first_users`)."""
  return weak.replace(**{name: split_rows(getattr(weak, name), mesh) for name in USER_TABLES
                         if getattr(weak, name) is not None})


def first_users(weak: WeakSignals, m: int) -> WeakSignals:
  """`weak` with its `USER_TABLES` cut to their first `m` rows: the M users of a split, padded table
  (`split_by_users`), for the code that covers every user; unchanged where nothing is padded."""
  return weak.replace(**{name: getattr(weak, name)[:m] for name in USER_TABLES
                         if getattr(weak, name) is not None})


def _aux_flags(ds: Dataset, users: np.ndarray, items: np.ndarray) -> np.ndarray:
  flags = np.zeros((users.shape[0], len(ds.auxiliary)), np.float32)
  for k, b in enumerate(ds.auxiliary):
    flags[:, k] = np.asarray(ds.train[b][users, items]).ravel() != 0
  return flags


def _pairs(mat: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
  mat = sp.csr_matrix(mat)
  mat.sort_indices()
  return np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr)), mat.indices.astype(np.int64)


def _col_counts(mat) -> np.ndarray:
  return np.asarray((sp.csr_matrix(mat) != 0).sum(axis=0)).ravel().astype(np.float64)


def _row_counts(mat) -> np.ndarray:
  return np.asarray((sp.csr_matrix(mat) != 0).sum(axis=1)).ravel().astype(np.float64)


def _smoothed_share(converted: np.ndarray, total: np.ndarray, prior: float, strength: float = 5.0):
  return ((converted + strength * prior) / (total + strength)).astype(np.float32)


def _padded_pairs(users: np.ndarray, items: np.ndarray, aux: np.ndarray, m: int, width: int):
  """Per user, up to `width` of its pairs (most auxiliary behaviors first, then lower item id), padded:
  (items [M, width] int32, mask [M, width], aux [M, width, K-1])."""
  strength = aux.sum(axis=1)
  order = np.lexsort((items, -strength, users))
  u_sorted = users[order]
  start = np.searchsorted(u_sorted, np.arange(m))
  rank = np.arange(order.shape[0]) - start[u_sorted]
  keep = rank < width
  out_items = np.zeros((m, width), np.int32)
  out_mask = np.zeros((m, width), bool)
  out_aux = np.zeros((m, width, aux.shape[1]), np.float32)
  rows, cols = u_sorted[keep], rank[keep]
  out_items[rows, cols] = items[order][keep]
  out_mask[rows, cols] = True
  out_aux[rows, cols] = aux[order][keep]
  return out_items, out_mask, out_aux


def _flat_indices(mask: np.ndarray) -> np.ndarray:
  if mask.size >= 2**31:
    raise ValueError(f"{mask.shape[0]} users x {mask.shape[1]} candidates do not fit int32 indices; "
                     "lower model.hesitation.max_candidates")
  return np.flatnonzero(mask.ravel())


def _binary(mat) -> sp.csr_matrix:
  """`binary_csr` in float64, so that products of these matrices count exactly."""
  return binary_csr(mat).astype(np.float64)


def cross_counts(ds: Dataset, rows: np.ndarray, cols: np.ndarray, chunk_cells: int = 2**24) -> np.ndarray:
  """(R_k R_kᵀ R_target)[u, i] for the pairs (rows, cols) [P] and every behavior k (binary R): [P, K].

  Built item-to-item, T_k = R_kᵀ R_target (users with k on j who bought i), then rows of R_k T_k for a chunk
  of users at a time (dense chunk x N), read at the pairs; the chunks run on the host threads."""
  target = _binary(ds.train_target)
  out = np.zeros((rows.shape[0], len(ds.behaviors)), np.float64)
  order = np.argsort(rows, kind="stable")
  sorted_rows = rows[order]
  step = max(1, chunk_cells // max(ds.n_items, 1) // host_threads())
  for k, b in enumerate(ds.behaviors):
    r_k = _binary(ds.train[b])
    item_item = (r_k.T @ target).tocsr()

    def chunk(start, stop, r_k=r_k, item_item=item_item, k=k):
      lo, hi = np.searchsorted(sorted_rows, [start, stop])
      if lo < hi:
        dense = (r_k[start:stop] @ item_item).toarray()
        pick = order[lo:hi]
        out[pick, k] = dense[rows[pick] - start, cols[pick]]

    parallel_chunks(chunk, ds.n_users, step)
  return out


def collaborative_candidates(ds: Dataset, width: int, chunk_cells: int = 2**24):
  """Per user, up to `width` items u has no training pair with whose co-buy count
  (R_target R_targetᵀ R_target)[u, i] is positive, largest first, ties to the lower item id:
  (items [M, width] int32, mask [M, width], floor [M]: the smallest kept count where all `width` slots
  are taken, else 0)."""
  m, n = ds.n_users, ds.n_items
  items = np.zeros((m, width), np.int32)
  mask = np.zeros((m, width), bool)
  floor = np.zeros((m,), np.float32)
  if width == 0:
    return items, mask, floor
  target = _binary(ds.train_target)
  item_item = (target.T @ target).tocsr()
  seen = sum(_binary(ds.train[b]) for b in ds.behaviors).tocsr()
  take = min(width, n)

  def chunk(start, stop):
    counts = (target[start:stop] @ item_item).toarray()
    rows, cols = seen[start:stop].nonzero()
    counts[rows, cols] = 0.0
    # one key per item, larger for a larger count and then a lower id: the top `width` keys are the slots
    key = counts * n + (n - 1 - np.arange(n))[None, :]
    top = np.argpartition(-key, take - 1, axis=1)[:, :take]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(key, top, axis=1), axis=1), axis=1)
    kept = np.take_along_axis(counts, top, axis=1)
    items[start:stop, :take] = top
    mask[start:stop, :take] = kept > 0
    full = mask[start:stop].all(axis=1)
    floor[start:stop] = np.where(full, kept[:, -1], 0.0)

  parallel_chunks(chunk, m, max(1, chunk_cells // max(n, 1) // host_threads()))
  return np.where(mask, items, 0).astype(np.int32), mask, floor


def _tables_cross(ds: Dataset, *tables: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
  """The cross-behavior counts of every masked slot of the padded tables (items [M, w], mask [M, w]), as
  [M, w, K] each, from one pass of `cross_counts` over the users for all of them."""
  picks = [np.nonzero(mask) for _, mask in tables]
  rows = np.concatenate([r for r, _ in picks])
  cols = np.concatenate([items[r, s] for (items, _), (r, s) in zip(tables, picks)]).astype(np.int64)
  counts = cross_counts(ds, rows, cols)
  out, start = [], 0
  for (items, _), (r, s) in zip(tables, picks):
    table = np.zeros(items.shape + (len(ds.behaviors),), np.float32)
    table[r, s] = counts[start:start + r.shape[0]]
    out.append(table)
    start += r.shape[0]
  return out


def weak_signals(ds: Dataset, max_candidates: int = 128, cf_candidates: int = 0) -> WeakSignals:
  """Host-side construction of the converting / weak-signal pairs and padded candidates (once), with up to
  `cf_candidates` collaborative candidates per user."""
  converting = ds.converting_pairs()
  conv_u, conv_i = _pairs(converting)
  weak_u, weak_i = _pairs(ds.weak_signal_pairs())
  conv_aux, weak_aux = _aux_flags(ds, conv_u, conv_i), _aux_flags(ds, weak_u, weak_i)
  m, n = ds.n_users, ds.n_items
  cand_items, cand_mask, cand_aux = _padded_pairs(weak_u, weak_i, weak_aux, m, max_candidates)
  conv_width = max(1, min(int(max_candidates), int(np.bincount(conv_u, minlength=m).max(initial=0))))
  conv_items, conv_mask, conv_table_aux = _padded_pairs(conv_u, conv_i, conv_aux, m, conv_width)
  # conversion statistics from training data
  aux_item = np.bincount(np.concatenate([conv_i, weak_i]), minlength=n)
  aux_user = np.bincount(np.concatenate([conv_u, weak_u]), minlength=m)
  prior = conv_i.shape[0] / max(conv_i.shape[0] + weak_i.shape[0], 1)
  purchases = np.asarray(ds.train_target.sum(axis=0)).ravel()
  item_stats = np.stack([np.log1p(purchases).astype(np.float32),
                         _smoothed_share(np.bincount(conv_i, minlength=n), aux_item, prior)], axis=1)
  user_stats = _smoothed_share(np.bincount(conv_u, minlength=m), aux_user, prior)[:, None]
  target = ds.train_target
  item_counts = np.stack([_col_counts(ds.train[b]) for b in ds.behaviors], axis=1)
  user_counts = np.stack([_row_counts(ds.train[b]) for b in ds.behaviors], axis=1)
  item_conv = np.stack([_col_counts(sp.csr_matrix(ds.train[b]).multiply(target) != 0)
                        for b in ds.auxiliary], axis=1).reshape(n, len(ds.auxiliary))
  aux_totals = item_counts[:, :-1].sum(axis=0)
  conv_prior = np.append(item_conv.sum(axis=0) / np.maximum(aux_totals, 1), prior)
  user_conv = np.stack([np.bincount(conv_u, minlength=m), aux_user], axis=1)
  cf_items, cf_mask, cf_floor = collaborative_candidates(ds, int(cf_candidates))
  buy_u, buy_i = _pairs(binary_csr(binary_csr(target) - converting))  # purchases outside A_u
  buy_width = max(1, min(int(max_candidates), int(np.bincount(buy_u, minlength=m).max(initial=0))))
  buy_items, buy_mask, _ = _padded_pairs(buy_u, buy_i, np.zeros((buy_u.shape[0], 0), np.float32), m,
                                         buy_width)
  cand_cross, conv_cross, cf_cross, buy_cross = _tables_cross(
      ds, (cand_items, cand_mask), (conv_items, conv_mask), (cf_items, cf_mask), (buy_items, buy_mask))
  i32 = lambda x: jnp.asarray(x, jnp.int32)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return WeakSignals(conv_users=i32(conv_u), conv_items=i32(conv_i), conv_aux=jnp.asarray(conv_aux),
                     weak_users=i32(weak_u), weak_items=i32(weak_i), weak_aux=jnp.asarray(weak_aux),
                     cand_items=jnp.asarray(cand_items), cand_mask=jnp.asarray(cand_mask),
                     cand_aux=jnp.asarray(cand_aux), cand_flat=i32(_flat_indices(cand_mask)),
                     conv_table_items=jnp.asarray(conv_items),
                     conv_table_mask=jnp.asarray(conv_mask), conv_table_aux=jnp.asarray(conv_table_aux),
                     item_stats=jnp.asarray(item_stats),
                     user_stats=jnp.asarray(user_stats),
                     item_counts=f32(item_counts), item_conv=f32(item_conv), user_counts=f32(user_counts),
                     user_conv=f32(user_conv), conv_prior=f32(conv_prior),
                     cand_cross=f32(cand_cross),
                     conv_cross=f32(conv_cross),
                     cf_items=jnp.asarray(cf_items), cf_mask=jnp.asarray(cf_mask),
                     cf_cross=f32(cf_cross), cf_floor=f32(cf_floor),
                     buy_items=jnp.asarray(buy_items), buy_mask=jnp.asarray(buy_mask),
                     buy_cross=f32(buy_cross))
