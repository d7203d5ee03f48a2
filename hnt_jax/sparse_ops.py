"""The sparse products a graph offers, one object per graph, chosen once when the graph is built.

Model code calls `graph.ops.<product>(graph, ...)` and holds only the method's maths; which formulation runs
is the graph's business:

* `XlaOps`: BCOO products inside the jitted program (accelerators; the CPU backend with
  `train.propagation=bcoo`).
* `HostOps`: SciPy / NumPy products through host callbacks with their own gradients (`hnt_jax.host`), the
  fast formulation on the CPU backend (`train.propagation=auto` or `host`).
* `ShardedOps`: on a device mesh, every product multiplies each device's block of rows: propagation
  Â's (`distributed.sharded_matmul`), the incidence products and the views the incidence's, by users
  (`distributed.sharded_gated_mean`).

Every product equals the XLA formulation (tested against it and a dense NumPy reference). The products:

* `propagate(g, x)`: Â · x;
* `incidence_matmul(g, x)`: R · x (a purchase prototype's sum, for instance);
* `mean_view(g, emb)`: h_u = the mean of e_j over the user's edges, with the edges' gates (all 1);
* `row_dots(g, x, y, cols)`: ⟨x_b, y_j⟩ for the columns j = cols[b, c] of each row b, [B, C] (not a product
  of g's matrices: a batch of users' scores on their own candidates, a gather the host does faster);
* `gated_view(g, phi, protos, emb, delta, temperature, active, budget)`: negative transfer's gated view
  h_u = Σ_j g_uj e_j / Σ_j g_uj with g_uj = σ((⟨φ_j, π_u⟩ − δ) / τ), and the gates. With `active` (bool
  [M]) and a `budget` > 0 the view is exact only for those users, the gates are computed on their edges
  alone, and no gates are returned: a training step reads its own users' views only.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax.experimental import sparse as jsparse

from hnt_jax import host
from hnt_jax.distributed import sharded_gated_mean, sharded_matmul

Gates = Optional[jax.Array]  # [E] in the graph's CSR order, or None when only some users' edges were gated


# --- XLA formulations ------------------------------------------------------------------------------------

def edge_gates(graph, phi: jax.Array, prototypes: jax.Array, delta: jax.Array, temperature: float) -> jax.Array:
  """g_uj for every edge of `graph`, in its CSR order: σ((⟨φ(j), π_u⟩ − δ) / τ)."""
  return _gates(graph.users, graph.items, phi, prototypes, delta, temperature)


def _gates(users, items, phi, prototypes, delta, temperature) -> jax.Array:
  s = jnp.sum(phi[items] * prototypes[users], axis=-1)
  return jax.nn.sigmoid((s - delta) / temperature)


def gated_mean(graph, weights: jax.Array, item_emb: jax.Array, n_users: int) -> jax.Array:
  """h_u = Σ_j w_uj e_j / Σ_j w_uj over the user's edges (0 for users without edges). The incidence's own
  data (1 unless a caller re-weights edges, as `influence.edge_influence` does) multiplies the weights."""
  return _weighted_mean(graph.incidence.indices, weights * graph.incidence.data, item_emb, n_users,
                        unique=True)


def _weighted_mean(indices: jax.Array, weights: jax.Array, item_emb: jax.Array, n_users: int,
                   unique: bool) -> jax.Array:
  """Σ_j w_uj e_j / Σ_j w_uj for (user, item) `indices` sorted by user, [n_users, d]."""
  weighted = jsparse.BCOO((weights, indices), shape=(n_users, item_emb.shape[0]), indices_sorted=True,
                          unique_indices=unique)
  total = weighted @ item_emb
  norm = jax.ops.segment_sum(weights, indices[:, 0], num_segments=n_users, indices_are_sorted=True)
  return total / jnp.maximum(norm, 1e-8)[:, None]


def edge_capacity(n_edges: int, budget: float) -> int:
  """Edges in the buffer of `active_edges` for a share `budget` of `n_edges` (0 when it would not help)."""
  if budget <= 0 or budget >= 1:
    return 0
  cap = int(math.ceil(budget * n_edges))
  return cap if cap < n_edges else 0


def active_edges(graph, active: jax.Array, capacity: int):
  """The edges of the users with `active[u]`, in CSR order, in a buffer of static size `capacity`:
  (edge indices, padded with the last edge; valid mask; how many edges there are, which may exceed it)."""
  mask = active[graph.users]
  count = jnp.sum(mask, dtype=jnp.int32)
  last = graph.users.shape[0] - 1
  idx = jnp.nonzero(mask, size=capacity, fill_value=last)[0]
  return idx, jnp.arange(capacity) < count, count


def active_gated_mean(graph, active: jax.Array, capacity: int, phi: jax.Array, prototypes: jax.Array,
                      delta: jax.Array, temperature: float, item_emb: jax.Array, n_users: int) -> jax.Array:
  """The gated view of `gated_mean(edge_gates(...))`, exact for the users with `active[u]`, computed over
  their edges only when they fit in `capacity` edges (other rows are then 0), else over all edges.

  A training step reads the views of its own users only, so its gates, and their gradients, are needed on
  those users' edges alone: on Taobao a step's users hold about a third of the auxiliary edges."""
  idx, valid, count = active_edges(graph, active, capacity)

  def subset(_):
    users, items = graph.users[idx], graph.items[idx]
    gate = _gates(users, items, phi, prototypes, delta, temperature)
    weights = jnp.where(valid, gate * graph.incidence.data[idx], 0.0)
    return _weighted_mean(jnp.stack([users, items], axis=1), weights, item_emb, n_users, unique=False)

  def every_edge(_):
    gate = edge_gates(graph, phi, prototypes, delta, temperature)
    return gated_mean(graph, gate, item_emb, n_users)

  return jax.lax.cond(count <= capacity, subset, every_edge, None)


# --- the three backends ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class XlaOps:
  """BCOO products inside the jitted program."""
  name = "bcoo"

  def propagate(self, g, x: jax.Array) -> jax.Array:
    return g.adj @ x

  def incidence_matmul(self, g, x: jax.Array) -> jax.Array:
    return g.incidence @ x

  def row_dots(self, g, x: jax.Array, y: jax.Array, cols: jax.Array) -> jax.Array:
    return jnp.einsum("bd,bcd->bc", x, y[cols])

  def mean_view(self, g, emb: jax.Array) -> tuple[jax.Array, jax.Array]:
    gate = jnp.ones(g.users.shape, emb.dtype)
    return gated_mean(g, gate, emb, g.incidence.shape[0]), gate

  def gated_view(self, g, phi, protos, emb, delta, temperature: float, active: Optional[jax.Array] = None,
                 budget: float = 0.0) -> tuple[jax.Array, Gates]:
    n_users = g.incidence.shape[0]
    capacity = edge_capacity(g.n_edges, budget) if active is not None else 0
    if capacity:
      return active_gated_mean(g, active, capacity, phi, protos, delta, temperature, emb, n_users), None
    gate = edge_gates(g, phi, protos, delta, temperature)
    return gated_mean(g, gate, emb, n_users), gate


@dataclasses.dataclass(frozen=True)
class HostOps:
  """SciPy / NumPy products on the host (the CPU backend). They take the incidence's data as 1: a graph
  whose edges are re-weighted (`influence.weighted_graph`) switches to `XlaOps`."""
  matrix: host.HostMatrix  # Â as row blocks of a CSR matrix
  edges: host.HostEdges  # R's edges in CSR order
  name = "host"

  def propagate(self, g, x: jax.Array) -> jax.Array:
    return host.symmetric_matmul(self.matrix, x)

  def incidence_matmul(self, g, x: jax.Array) -> jax.Array:
    return host.edge_matmul(self.edges, x)

  def row_dots(self, g, x: jax.Array, y: jax.Array, cols: jax.Array) -> jax.Array:
    f32 = jnp.float32  # the host computes in float32; the casts carry the gradients back to x's and y's dtypes
    return host.row_dots(x.astype(f32), y.astype(f32), cols).astype(jnp.result_type(x, y))

  def mean_view(self, g, emb: jax.Array) -> tuple[jax.Array, jax.Array]:
    return host.edge_matmul(self.edges, emb, True), jnp.ones(g.users.shape, emb.dtype)

  def gated_view(self, g, phi, protos, emb, delta, temperature: float, active: Optional[jax.Array] = None,
                 budget: float = 0.0) -> tuple[jax.Array, Gates]:
    subset = active if budget else None  # the active users' edges alone, with no buffer to fit
    h, gate = host.gated_mean(self.edges, phi, protos, emb, delta, temperature, subset)
    return h, (gate if subset is None else None)


@dataclasses.dataclass(frozen=True)
class ShardedOps(XlaOps):
  """Every product row-sharded over the mesh's `data` axis: propagation by blocks of Â's rows (`g.shards`),
  the incidence products and views by blocks of users (`g.edge_shards`), each device multiplying its own
  entries. Views are computed on every edge (each device holds 1/D of them), so the gates always come back."""
  name = "sharded"

  def propagate(self, g, x: jax.Array) -> jax.Array:
    return sharded_matmul(g.shards, x)

  def incidence_matmul(self, g, x: jax.Array) -> jax.Array:
    return sharded_matmul(g.edge_shards, x)

  def mean_view(self, g, emb: jax.Array) -> tuple[jax.Array, jax.Array]:
    return sharded_gated_mean(g.edge_shards, emb)

  def gated_view(self, g, phi, protos, emb, delta, temperature: float, active: Optional[jax.Array] = None,
                 budget: float = 0.0) -> tuple[jax.Array, Gates]:
    return sharded_gated_mean(g.edge_shards, emb, phi, protos, delta, temperature)


def describe(ops: Any) -> str:
  return getattr(ops, "name", type(ops).__name__)
