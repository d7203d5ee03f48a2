"""Graphs built once from a Dataset: normalized BCOO adjacencies and per-edge index arrays.

For every behavior b with training matrix R_b (users x items):
* `adj`: the symmetric-normalized bipartite adjacency  Â = D^{-1/2} [[0, R], [Rᵀ, 0]] D^{-1/2}  over the
  M + N nodes (users first, then items) as a `jax.experimental.sparse.BCOO` with sorted, unique indices;
  nodes without edges have empty rows (no division by zero);
* `incidence`: R_b itself as an M x N BCOO (data = 1), whose data a model may replace by per-edge weights;
* `users`, `items`: the user and item of each edge, in the CSR order of R_b (the order of `incidence`);
* `rows`: R_b as `UserRows`, to read the items of a batch of users (masks, candidates, heuristics);
* `shards`: on a device mesh, `adj` split by rows over the mesh's `data` axis (`distributed.RowShards`);
  `adj` itself is then dropped, so each device holds only its block of rows; `edge_shards`: `incidence`
  split the same way by users, for the incidence products and the views (the edge lists `users`, `items`
  and `incidence` stay whole on every device: sampling and the left-out edges read them);
* `ops`: the graph's sparse products (`hnt_jax.sparse_ops`), chosen here once: model code calls them and
  never asks which backend runs.

Everything here is host NumPy turned into device arrays once; models only read it.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.experimental import sparse as jsparse
from jax.sharding import Mesh

from hnt_jax.data.dataset import Dataset
from hnt_jax.errors import ConfigError
from hnt_jax import host, sparse_ops
from hnt_jax.distributed import RowShards, row_shards
from hnt_jax.signals import WeakSignals


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


def has_item(rows: UserRows, users: jax.Array, items: jax.Array) -> jax.Array:
  """Whether each (users[b], items[b]) is an entry of `rows` (O(B x max_degree))."""
  row_items, mask = rows.padded(users)
  return jnp.any(mask & (row_items == items[:, None]), axis=1)


def sample_negatives(key: jax.Array, rows: UserRows, users: jax.Array, n_items: int,
                     max_rounds: int = 1000) -> jax.Array:
  """One uniform item per user that is not among the user's `rows` items (redrawn until exact)."""
  key, sub = jax.random.split(key)
  neg = jax.random.randint(sub, users.shape, 0, n_items, dtype=jnp.int32)

  def cond(carry):
    _, neg, rounds = carry
    return jnp.any(has_item(rows, users, neg)) & (rounds < max_rounds)

  def body(carry):
    key, neg, rounds = carry
    key, sub = jax.random.split(key)
    redraw = jax.random.randint(sub, users.shape, 0, n_items, dtype=jnp.int32)
    return key, jnp.where(has_item(rows, users, neg), redraw, neg), rounds + 1

  _, neg, _ = jax.lax.while_loop(cond, body, (key, neg, jnp.int32(0)))
  return neg


@flax.struct.dataclass
class BehaviorGraph:
  adj: Optional[jsparse.BCOO]  # (M+N) x (M+N), symmetric normalized (None when `shards` holds it)
  incidence: jsparse.BCOO  # M x N, binary, CSR order
  users: jax.Array  # [E] int32
  items: jax.Array  # [E] int32
  rows: UserRows  # the same matrix, read by batches of users
  item_degree: jax.Array  # [N] int32: each item's number of edges
  # the graph's sparse products (hnt_jax.sparse_ops: XLA's BCOO, the host's SciPy, row-sharded), chosen once
  ops: Any = flax.struct.field(pytree_node=False, default=sparse_ops.XlaOps())
  # the dtype `propagate` rounds its input and output to ("bfloat16": the products run in it on device)
  dtype: str = flax.struct.field(pytree_node=False, default="float32")
  shards: Optional[RowShards] = None  # on a device mesh: `adj` split by rows over `data`
  edge_shards: Optional[RowShards] = None  # on a device mesh: `incidence` split by users over `data`

  @property
  def n_edges(self) -> int:
    return int(self.users.shape[0])


@flax.struct.dataclass
class Graphs:
  """All device-side graph structures of a dataset; a pytree, so it can be passed into `jax.jit`."""
  per_behavior: tuple[BehaviorGraph, ...]
  merged: Optional[BehaviorGraph]  # all behaviors as one graph (LightGCN-G)
  behaviors: tuple[str, ...] = flax.struct.field(pytree_node=False)
  n_users: int = flax.struct.field(pytree_node=False)
  n_items: int = flax.struct.field(pytree_node=False)
  weak: Optional[WeakSignals] = None  # for the models that read them (hnt_jax.signals); else None

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
  """The graph of one behavior and the sparse products it runs (`ops`): row-sharded over the mesh's `data`
  axis with a multi-device `mesh`, else the host's or XLA's as `propagation` says."""
  if dtype not in DTYPES:
    raise ConfigError(f"train.propagation_dtype={dtype!r} is not one of {', '.join(DTYPES)}")
  inc = incidence(mat)
  adj = normalized_adjacency(mat)
  item_degree = jnp.asarray(np.bincount(np.asarray(inc.indices[:, 1]), minlength=inc.shape[1]), jnp.int32)
  edges = dict(incidence=inc, users=inc.indices[:, 0], items=inc.indices[:, 1], rows=user_rows(mat),
               item_degree=item_degree, dtype=dtype)
  if mesh is not None:
    idx = np.asarray(adj.indices)
    shards = row_shards(idx[:, 0], idx[:, 1], np.asarray(adj.data), adj.shape[0], mesh)
    pairs = np.asarray(inc.indices)
    edge_shards = row_shards(pairs[:, 0], pairs[:, 1], np.asarray(inc.data), inc.shape[0], mesh)
    return BehaviorGraph(adj=None, shards=shards, edge_shards=edge_shards, ops=sparse_ops.ShardedOps(), **edges)
  ops = sparse_ops.XlaOps()
  if _use_host(propagation):
    idx, pairs = np.asarray(adj.indices), np.asarray(inc.indices)
    ops = sparse_ops.HostOps(matrix=host.host_matrix(np.asarray(adj.data), idx[:, 0], idx[:, 1], adj.shape),
                             edges=host.HostEdges(pairs[:, 0], pairs[:, 1], *inc.shape))
  if dtype != "float32":
    adj = jsparse.BCOO((adj.data.astype(dtype), adj.indices), shape=adj.shape, indices_sorted=True,
                       unique_indices=True)
  return BehaviorGraph(adj=adj, ops=ops, **edges)


def build_graphs(ds: Dataset, merged: bool = True, propagation: str = "auto", mesh: Optional[Mesh] = None,
                 dtype: str = "float32", weak: Optional[WeakSignals] = None) -> Graphs:
  """Device graphs of every behavior of `ds` and of their union (`merged`); `weak` (`hnt_jax.signals`) is
  carried along for the models that read it.

  `propagation`: "bcoo" multiplies by the BCOO adjacency on device; "host" by a SciPy CSR copy through a
  callback (several times faster on CPU); "auto" picks "host" on the CPU backend, "bcoo" elsewhere. With a
  multi-device `mesh` every propagation is row-sharded over its `data` axis instead. `dtype`: see `propagate`.
  """
  per = tuple(behavior_graph(ds.train[b], propagation, mesh, dtype) for b in ds.behaviors)
  union = None
  if merged:
    total = sum((ds.train[b] for b in ds.behaviors), sp.csr_matrix((ds.n_users, ds.n_items)))
    union = behavior_graph(total, propagation, mesh, dtype)
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
  return graph.ops.propagate(graph, x)


@flax.struct.dataclass
class LeftOutEdges:
  """Edges of one graph that a loss leaves out of its products: row b's own edge (users[b], items[b]).

  `weights` holds each edge's entry of Â (1/sqrt(deg_u deg_i), the degrees of the whole graph), 0 where
  the row repeats an earlier row's edge, so each edge is taken out once. `counts` is, per user, how many of
  the user's edges are left out."""
  users: jax.Array  # [B] int32
  items: jax.Array  # [B] int32
  weights: jax.Array  # [B]
  counts: jax.Array  # [M] int32


def left_out_edges(graph: BehaviorGraph, users: jax.Array, items: jax.Array) -> LeftOutEdges:
  """The rows' edges (each must be an edge of `graph`, as a training purchase is of the target graph)."""
  m = graph.incidence.shape[0]
  order = jnp.lexsort((items, users))
  su, si = users[order], items[order]
  first_sorted = jnp.concatenate([jnp.ones((1,), bool), (su[1:] != su[:-1]) | (si[1:] != si[:-1])])
  first = jnp.zeros_like(first_sorted).at[order].set(first_sorted)
  deg_u = graph.rows.degree(users).astype(jnp.float32)
  deg_i = graph.item_degree[items].astype(jnp.float32)
  weights = jnp.where(first, jax.lax.rsqrt(jnp.maximum(deg_u * deg_i, 1.0)), 0.0)
  counts = jnp.zeros((m,), jnp.int32).at[users].add(first.astype(jnp.int32))
  return LeftOutEdges(users=users, items=items, weights=weights, counts=counts)


def left_out_product(left: LeftOutEdges, x: jax.Array) -> jax.Array:
  """Δ · x, Δ the left-out edges' entries of Â (both directions; x is [M+N, d]): Â · x − Δ · x is the
  product over the graph without them (the other edges keep their weights)."""
  m = left.counts.shape[0]
  w = left.weights.astype(x.dtype)[:, None]
  out = jnp.zeros_like(x).at[left.users].add(w * x[m + left.items])
  return out.at[m + left.items].add(w * x[left.users])
