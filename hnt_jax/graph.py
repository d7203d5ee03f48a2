"""Graphs built once from a Dataset: normalized BCOO adjacencies and per-edge index arrays.

For every behavior b with training matrix R_b (users x items):
* `adj`: the symmetric-normalized bipartite adjacency  Â = D^{-1/2} [[0, R], [Rᵀ, 0]] D^{-1/2}  over the
  M + N nodes (users first, then items) as a `jax.experimental.sparse.BCOO` with sorted, unique indices;
  nodes without edges have empty rows (no division by zero);
* `incidence`: R_b itself as an M x N BCOO (data = 1), whose data a model may replace by per-edge weights;
* `users`, `items`: the user and item of each edge, in the CSR order of R_b (the order of `incidence`);
* `rows`: R_b as `UserRows`, to read the items of a batch of users (masks, candidates, heuristics);
* `shards`: on a device mesh, `adj` split by rows over the mesh's `data` axis (`distributed.RowShards`);
  `adj` itself is then dropped, so each device holds only its block of rows.

Everything here is host NumPy turned into device arrays once; models only read it.
"""
from __future__ import annotations

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.experimental import sparse as jsparse
from jax.sharding import Mesh

from hnt_jax.data.dataset import Dataset
from hnt_jax.data.errors import ConfigError
from hnt_jax import host
from hnt_jax.distributed import RowShards, row_shards, sharded_matmul


@flax.struct.dataclass
class UserRows:
  """A users x items CSR matrix on device, read a batch of users at a time with static shapes.

  `padded(users)` gives each user's items as a [B, max_degree] array with a mask; `dense(users)` scatters
  them into a [B, N] matrix. Cost O(B x max_degree), never O(nnz).
  """
  indptr: jax.Array  # [M+1] int32
  indices: jax.Array  # [E] int32
  max_degree: int = flax.struct.field(pytree_node=False)
  n_items: int = flax.struct.field(pytree_node=False)

  def degree(self, users: jax.Array) -> jax.Array:
    return self.indptr[users + 1] - self.indptr[users]

  def padded(self, users: jax.Array) -> tuple[jax.Array, jax.Array]:
    """([B, D] item ids (0 where padded), [B, D] bool mask), D = max_degree."""
    offsets = jnp.arange(max(self.max_degree, 1), dtype=jnp.int32)[None, :]
    mask = offsets < self.degree(users)[:, None]
    pos = jnp.where(mask, self.indptr[users][:, None] + offsets, 0)
    if self.indices.shape[0] == 0:  # an empty matrix: every row is padding
      return jnp.zeros_like(pos), mask
    items = jnp.where(mask, self.indices[jnp.minimum(pos, self.indices.shape[0] - 1)], 0)
    return items, mask

  def dense(self, users: jax.Array, dtype=jnp.float32) -> jax.Array:
    """[B, N] with 1 where the user has the item."""
    items, mask = self.padded(users)
    rows = jnp.broadcast_to(jnp.arange(users.shape[0])[:, None], items.shape)
    return jnp.zeros((users.shape[0], self.n_items), dtype).at[rows, items].max(mask.astype(dtype))


def user_rows(mat: sp.spmatrix) -> UserRows:
  csr = sp.csr_matrix(mat)
  csr.sum_duplicates()
  csr.sort_indices()
  degree = np.diff(csr.indptr)
  return UserRows(indptr=jnp.asarray(csr.indptr, jnp.int32), indices=jnp.asarray(csr.indices, jnp.int32),
                  max_degree=int(degree.max()) if degree.size else 0, n_items=csr.shape[1])


@flax.struct.dataclass
class BehaviorGraph:
  adj: Optional[jsparse.BCOO]  # (M+N) x (M+N), symmetric normalized (None when `shards` holds it)
  incidence: jsparse.BCOO  # M x N, binary, CSR order
  users: jax.Array  # [E] int32
  items: jax.Array  # [E] int32
  rows: UserRows  # the same matrix, read by batches of users
  # >= 0: `propagate` multiplies by a host (SciPy CSR) copy of `adj`, the fastest formulation on CPU
  host_key: int = flax.struct.field(pytree_node=False, default=-1)
  # >= 0: products with per-edge values over (users, items) run on the host too (`hnt_jax.host`); they take
  # the incidence's data as 1, so a graph with re-weighted edges drops it (as `influence.weighted_graph` does)
  edges_key: int = flax.struct.field(pytree_node=False, default=-1)
  # the dtype `propagate` rounds its input and output to ("bfloat16": the products run in it on device)
  dtype: str = flax.struct.field(pytree_node=False, default="float32")
  shards: Optional[RowShards] = None  # on a device mesh: `adj` split by rows over `data`

  @property
  def n_edges(self) -> int:
    return int(self.users.shape[0])


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


@flax.struct.dataclass
class Graphs:
  """All device-side graph structures of a dataset; a pytree, so it can be passed into `jax.jit`."""
  per_behavior: tuple[BehaviorGraph, ...]
  merged: Optional[BehaviorGraph]  # all behaviors as one graph (LightGCN-G)
  weak: Optional[WeakSignals]  # multi-behavior datasets only
  behaviors: tuple[str, ...] = flax.struct.field(pytree_node=False)
  n_users: int = flax.struct.field(pytree_node=False)
  n_items: int = flax.struct.field(pytree_node=False)

  def __getitem__(self, behavior: str) -> BehaviorGraph:
    return self.per_behavior[self.behaviors.index(behavior)]

  @property
  def target(self) -> BehaviorGraph:
    return self.per_behavior[-1]


def normalized_adjacency(mat: sp.spmatrix, dtype=np.float32) -> jsparse.BCOO:
  """Â = D^{-1/2} A D^{-1/2} of the bipartite graph of `mat` (users x items) as a sorted BCOO."""
  csr = sp.csr_matrix(mat, dtype=np.float64)
  csr.sum_duplicates()
  csr.data[:] = 1.0
  m, n = csr.shape
  deg_u = np.asarray(csr.sum(axis=1)).ravel()
  deg_i = np.asarray(csr.sum(axis=0)).ravel()
  inv_u = np.where(deg_u > 0, 1.0 / np.sqrt(np.maximum(deg_u, 1)), 0.0)
  inv_i = np.where(deg_i > 0, 1.0 / np.sqrt(np.maximum(deg_i, 1)), 0.0)
  coo = csr.tocoo()  # (user, item) sorted by user then item
  upper_rows, upper_cols = coo.row, coo.col + m
  csc = csr.tocsc()
  csc.sort_indices()
  lower_cols = csc.indices  # users, sorted within each item
  lower_rows = np.repeat(np.arange(n), np.diff(csc.indptr)) + m
  rows = np.concatenate([upper_rows, lower_rows]).astype(np.int32)
  cols = np.concatenate([upper_cols, lower_cols]).astype(np.int32)
  weights = np.concatenate([inv_u[coo.row] * inv_i[coo.col],
                            inv_u[lower_cols] * inv_i[lower_rows - m]]).astype(dtype)
  indices = np.stack([rows, cols], axis=1)
  return jsparse.BCOO((jnp.asarray(weights), jnp.asarray(indices)), shape=(m + n, m + n),
                      indices_sorted=True, unique_indices=True)


def incidence(mat: sp.spmatrix, dtype=np.float32) -> jsparse.BCOO:
  """`mat` as a binary M x N BCOO with entries in CSR order."""
  csr = sp.csr_matrix(mat)
  csr.sum_duplicates()
  csr.sort_indices()
  rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr)).astype(np.int32)
  indices = np.stack([rows, csr.indices.astype(np.int32)], axis=1)
  return jsparse.BCOO((jnp.ones(rows.shape[0], dtype), jnp.asarray(indices)), shape=csr.shape,
                      indices_sorted=True, unique_indices=True)


PROPAGATION = ("auto", "bcoo", "host")


def _use_host(propagation: str) -> bool:
  if propagation not in PROPAGATION:
    raise ValueError(f"train.propagation={propagation!r} is not one of {', '.join(PROPAGATION)}")
  return propagation == "host" or (propagation == "auto" and jax.default_backend() == "cpu")


DTYPES = ("float32", "bfloat16")


def behavior_graph(mat: sp.spmatrix, propagation: str = "bcoo", mesh: Optional[Mesh] = None,
                   dtype: str = "float32") -> BehaviorGraph:
  """The graph of one behavior; with a multi-device `mesh`, propagation is row-sharded over `data`."""
  if dtype not in DTYPES:
    raise ConfigError(f"train.propagation_dtype={dtype!r} is not one of {', '.join(DTYPES)}")
  inc = incidence(mat)
  adj = normalized_adjacency(mat)
  if mesh is not None:
    idx = np.asarray(adj.indices)
    shards = row_shards(idx[:, 0], idx[:, 1], np.asarray(adj.data), adj.shape[0], mesh)
    return BehaviorGraph(adj=None, incidence=inc, users=inc.indices[:, 0], items=inc.indices[:, 1],
                         rows=user_rows(mat), shards=shards, dtype=dtype)
  key = edges_key = -1
  if _use_host(propagation):
    idx = np.asarray(adj.indices)
    key = host.register_matrix(np.asarray(adj.data), idx[:, 0], idx[:, 1], adj.shape)
    pairs = np.asarray(inc.indices)
    edges_key = host.register_edges(pairs[:, 0], pairs[:, 1], *inc.shape)
  if dtype != "float32":
    adj = jsparse.BCOO((adj.data.astype(dtype), adj.indices), shape=adj.shape, indices_sorted=True,
                       unique_indices=True)
  return BehaviorGraph(adj=adj, incidence=inc, users=inc.indices[:, 0], items=inc.indices[:, 1],
                       rows=user_rows(mat), host_key=key, edges_key=edges_key, dtype=dtype)


def _aux_flags(ds: Dataset, users: np.ndarray, items: np.ndarray) -> np.ndarray:
  flags = np.zeros((users.shape[0], len(ds.auxiliary)), np.float32)
  for k, b in enumerate(ds.auxiliary):
    flags[:, k] = np.asarray(ds.train[b][users, items]).ravel() != 0
  return flags


def _pairs(mat: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
  mat = sp.csr_matrix(mat)
  mat.sort_indices()
  return np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr)), mat.indices.astype(np.int64)


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


def weak_signals(ds: Dataset, max_candidates: int) -> WeakSignals:
  """Host-side construction of the converting / weak-signal pairs and padded candidates (once)."""
  conv_u, conv_i = _pairs(ds.converting_pairs())
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
  i32 = lambda x: jnp.asarray(x, jnp.int32)
  return WeakSignals(conv_users=i32(conv_u), conv_items=i32(conv_i), conv_aux=jnp.asarray(conv_aux),
                     weak_users=i32(weak_u), weak_items=i32(weak_i), weak_aux=jnp.asarray(weak_aux),
                     cand_items=jnp.asarray(cand_items), cand_mask=jnp.asarray(cand_mask),
                     cand_aux=jnp.asarray(cand_aux), cand_flat=i32(_flat_indices(cand_mask)),
                     conv_table_items=jnp.asarray(conv_items),
                     conv_table_mask=jnp.asarray(conv_mask), conv_table_aux=jnp.asarray(conv_table_aux),
                     item_stats=jnp.asarray(item_stats),
                     user_stats=jnp.asarray(user_stats))


def build_graphs(ds: Dataset, merged: bool = True, max_candidates: int = 128,
                 propagation: str = "auto", mesh: Optional[Mesh] = None, dtype: str = "float32") -> Graphs:
  """Device graphs of every behavior of `ds`, of their union (`merged`), and the weak-signal tables.

  `propagation`: "bcoo" multiplies by the BCOO adjacency on device; "host" by a SciPy CSR copy through a
  callback (several times faster on CPU); "auto" picks "host" on the CPU backend, "bcoo" elsewhere. With a
  multi-device `mesh` every propagation is row-sharded over its `data` axis instead. `dtype`: see `propagate`.
  """
  per = tuple(behavior_graph(ds.train[b], propagation, mesh, dtype) for b in ds.behaviors)
  union = None
  if merged:
    total = sum((ds.train[b] for b in ds.behaviors), sp.csr_matrix((ds.n_users, ds.n_items)))
    union = behavior_graph(total, propagation, mesh, dtype)
  weak = weak_signals(ds, max_candidates) if ds.auxiliary else None
  return Graphs(per_behavior=per, merged=union, weak=weak, behaviors=tuple(ds.behaviors),
                n_users=ds.n_users, n_items=ds.n_items)


def propagate(graph: BehaviorGraph, x: jax.Array) -> jax.Array:
  """One propagation layer: Â · x, by the formulation the graph was built for.

  With a graph built for "bfloat16", x and the product are rounded to bfloat16 (on device the product runs
  in it, with Â stored in it; the host product computes in float32 between the roundings) and the result
  comes back in x's dtype, so sums over layers and everything after them stay in float32."""
  if graph.dtype == "float32":
    return _product(graph, x)
  return _product(graph, x.astype(graph.dtype)).astype(graph.dtype).astype(x.dtype)


def _product(graph: BehaviorGraph, x: jax.Array) -> jax.Array:
  if graph.shards is not None:
    return sharded_matmul(graph.shards, x)
  if graph.host_key >= 0:
    return host.symmetric_matmul(graph.host_key, x)
  return graph.adj @ x
