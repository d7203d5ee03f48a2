"""Differentiable graph tools: the gradient of any loss with respect to each edge of a behavior's adjacency.

Give every edge (u, i) of behavior b a weight w_ui multiplying both of its entries in Â_b (the (u, i) and
(i, u) entries; the normalization is left as built) and its entry in the incidence matrix R_b (which HNT's
gated views and prototypes read). `edge_influence` returns ∂L/∂w at w = 1 for all edges
at once, in the CSR order of the behavior's training matrix (the order of `BehaviorGraph.users/items` and of
HNT's gates). A positive value means that strengthening the edge would raise the loss: for a target
ranking loss, the edges that hurt it ("which auxiliary edges cause negative transfer?").
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from hnt_jax.errors import ConfigError
from hnt_jax.graph import BehaviorGraph, Graphs
from hnt_jax.sparse_ops import XlaOps


def adjacency_edge_index(graph: BehaviorGraph) -> np.ndarray:
  """For each stored entry of `graph.adj`, the index (CSR order) of the user-item edge it belongs to."""
  if graph.adj is None:
    raise ConfigError("edge influence needs the whole adjacency on one device (build graphs without a mesh)")
  idx = np.asarray(graph.adj.indices)
  m, n = graph.incidence.shape
  users, items = np.asarray(graph.users, np.int64), np.asarray(graph.items, np.int64)
  edge_keys = users * n + items  # CSR order is sorted by (user, item)
  rows, cols = idx[:, 0].astype(np.int64), idx[:, 1].astype(np.int64)
  upper = rows < m
  entry_user = np.where(upper, rows, cols)
  entry_item = np.where(upper, cols - m, rows - m)
  pos = np.searchsorted(edge_keys, entry_user * n + entry_item)
  if not np.array_equal(edge_keys[np.minimum(pos, edge_keys.shape[0] - 1)], entry_user * n + entry_item):
    raise ValueError("adjacency and incidence of the graph do not describe the same edges")
  return pos.astype(np.int32)


def weighted_graph(graph: BehaviorGraph, weights: jax.Array, entry_edge: jax.Array) -> BehaviorGraph:
  """`graph` with both adjacency entries of edge e scaled by weights[e], multiplied through BCOO (so that
  gradients reach the weights; the host SciPy path has none)."""
  adj = jsparse.BCOO((graph.adj.data * weights[entry_edge], graph.adj.indices), shape=graph.adj.shape,
                     indices_sorted=True, unique_indices=True)
  incidence = jsparse.BCOO((graph.incidence.data * weights, graph.incidence.indices),
                           shape=graph.incidence.shape, indices_sorted=True, unique_indices=True)
  return graph.replace(adj=adj, incidence=incidence, ops=XlaOps())  # the host's products take weights as 1


def edge_influence(loss_fn: Callable[[Graphs], jax.Array], graphs: Graphs, behavior: str) -> jax.Array:
  """∂ loss_fn(graphs) / ∂ w_e at w = 1 for every edge e of `behavior` ([E], CSR order).

  `loss_fn` maps Graphs to a scalar, e.g. `lambda g: model.apply(variables, g, batch, method=model.loss,
  rngs=...)[0]`: any model, any loss.
  """
  if behavior not in graphs.behaviors:
    raise ConfigError(f"behavior {behavior!r} is not one of {', '.join(graphs.behaviors)}")
  k = graphs.behaviors.index(behavior)
  graph = graphs.per_behavior[k]
  entry_edge = jnp.asarray(adjacency_edge_index(graph))

  def loss_of_weights(weights):
    per = list(graphs.per_behavior)
    per[k] = weighted_graph(graph, weights, entry_edge)
    return loss_fn(graphs.replace(per_behavior=tuple(per)))

  return jax.jit(jax.grad(loss_of_weights))(jnp.ones(graph.users.shape[0], jnp.float32))
