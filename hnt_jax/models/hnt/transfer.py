"""Negative-transfer suppression in auxiliary fusion (docs/method.md section 2).

φ(i) = normalize(P e_i^K) is a learned item-similarity space; π_u = normalize(Σ_{i∈R_K(u)} φ(i)) is the
user's purchase prototype (normalize(P e_u^K) for users without purchases). Every auxiliary edge (u, j) of
behavior k gets a reliability gate g_uj = σ((⟨φ(j), π_u⟩ − δ_k) / τ), computed for all edges at once; the
gated view h_u^k = Σ_j g_uj e_j^k / Σ_j g_uj is a sparse product with the gates as BCOO data. Views are fused
into the user representation by behavior attention:
  z_u = e_u^K + Σ_k a_uk W_k h_u^k,   a_u = softmax_k(q · tanh(V [e_u^K ; h_u^k])).
L_sim (InfoNCE over co-purchase pairs) teaches φ that "similar" means "bought by the same people".
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import sparse as jsparse

from hnt_jax import host
from hnt_jax.graph import BehaviorGraph


def normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def edge_gates(graph: BehaviorGraph, phi: jax.Array, prototypes: jax.Array, delta: jax.Array,
               temperature: float) -> jax.Array:
  """g_uj for every edge of `graph`, in its CSR order: σ((⟨φ(j), π_u⟩ − δ) / τ)."""
  return _gates(graph.users, graph.items, phi, prototypes, delta, temperature)


def _gates(users, items, phi, prototypes, delta, temperature) -> jax.Array:
  s = jnp.sum(phi[items] * prototypes[users], axis=-1)
  return jax.nn.sigmoid((s - delta) / temperature)


def gated_mean(graph: BehaviorGraph, weights: jax.Array, item_emb: jax.Array, n_users: int) -> jax.Array:
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


def active_edges(graph: BehaviorGraph, active: jax.Array, capacity: int):
  """The edges of the users with `active[u]`, in CSR order, in a buffer of static size `capacity`:
  (edge indices, padded with the last edge; valid mask; how many edges there are, which may exceed it)."""
  mask = active[graph.users]
  count = jnp.sum(mask, dtype=jnp.int32)
  last = graph.users.shape[0] - 1
  idx = jnp.nonzero(mask, size=capacity, fill_value=last)[0]
  return idx, jnp.arange(capacity) < count, count


def active_gated_mean(graph: BehaviorGraph, active: jax.Array, capacity: int, phi: jax.Array,
                      prototypes: jax.Array, delta: jax.Array, temperature: float, item_emb: jax.Array,
                      n_users: int) -> jax.Array:
  """The gated view h_u of `gated_mean(edge_gates(...))`, exact for the users with `active[u]`, computed over
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


def info_nce(anchors: jax.Array, positives: jax.Array, mask: jax.Array, temperature: float) -> jax.Array:
  """InfoNCE with in-batch negatives: row b's positive is positives[b]; rows with mask False are ignored."""
  # masked rows are not negatives either: a -1e9 bias on their column (one [B, B] pass, no select)
  logits = anchors @ positives.T / temperature + jnp.where(mask, 0.0, -1e9)[None, :]
  loss = jax.nn.logsumexp(logits, axis=-1) - jnp.sum(anchors * positives, axis=-1) / temperature
  return jnp.sum(jnp.where(mask, loss, 0.0)) / jnp.maximum(mask.sum(), 1)


class NegativeTransfer(nn.Module):
  n_aux: int
  embed_dim: int
  sim_dim: int = 64
  attention_dim: int = 64
  temperature: float = 0.2
  use_gates: bool = True

  def setup(self):
    self.similarity = nn.Dense(self.sim_dim, use_bias=False, name="P")
    self.delta = self.param("delta", nn.initializers.zeros, (self.n_aux,))
    self.transforms = [nn.Dense(self.embed_dim, use_bias=False, name=f"W_{k}") for k in range(self.n_aux)]
    self.att_v = nn.Dense(self.attention_dim, name="V")
    self.att_q = self.param("q", nn.initializers.normal(0.1), (self.attention_dim,))

  def phi(self, item_emb: jax.Array) -> jax.Array:
    return normalize(self.similarity(item_emb))

  def prototypes(self, target: BehaviorGraph, phi_items: jax.Array, user_emb: jax.Array) -> jax.Array:
    if target.edges_key >= 0:
      summed = host.edge_matmul(target.edges_key, phi_items)
    else:
      summed = target.incidence @ phi_items
    has_purchase = jnp.linalg.norm(summed, axis=-1, keepdims=True) > 0
    return jnp.where(has_purchase, normalize(summed), normalize(self.similarity(user_emb)))

  def __call__(self, aux_graphs: Sequence[BehaviorGraph], target: BehaviorGraph, user_target: jax.Array,
               item_target: jax.Array, aux_items: Sequence[jax.Array], active: Optional[jax.Array] = None,
               edge_budget: float = 0.0):
    """(z_u [M, d], gates per auxiliary behavior, attention [M, K-1]).

    With `active` (bool [M]) and an `edge_budget`, z_u is exact only for those users, and the gates are
    computed only on their edges: with host products always, under XLA while they fit in a buffer of
    `edge_budget` x the behavior's edges (see `active_gated_mean`); no gates are returned then."""
    n_users = user_target.shape[0]
    gates, views = [], []
    if self.use_gates:
      phi_items = self.phi(item_target)
      protos = self.prototypes(target, phi_items, user_target)
    for k, (g, items_k) in enumerate(zip(aux_graphs, aux_items)):
      if g.edges_key >= 0:  # host products (CPU): the active users' edges alone, with no buffer to fit
        subset = active if self.use_gates and edge_budget else None
        if self.use_gates:
          h, gate = host.gated_mean(g.edges_key, phi_items, protos, items_k, self.delta[k], self.temperature,
                                    subset)
        else:
          h, gate = host.edge_matmul(g.edges_key, items_k, True), jnp.ones(g.users.shape, items_k.dtype)
        if subset is None:
          gates.append(gate)
        views.append(h)
        continue
      capacity = edge_capacity(g.n_edges, edge_budget) if active is not None else 0
      if self.use_gates and capacity:
        views.append(active_gated_mean(g, active, capacity, phi_items, protos, self.delta[k],
                                       self.temperature, items_k, n_users))
        continue
      if self.use_gates:
        gate = edge_gates(g, phi_items, protos, self.delta[k], self.temperature)
      else:
        gate = jnp.ones(g.users.shape, items_k.dtype)
      gates.append(gate)
      views.append(gated_mean(g, gate, items_k, n_users))
    logits = jnp.stack([jnp.tanh(self.att_v(jnp.concatenate([user_target, h], -1))) @ self.att_q
                        for h in views], axis=-1)
    attention = jax.nn.softmax(logits, axis=-1)
    z = user_target
    for k, h in enumerate(views):
      z = z + attention[:, k:k + 1] * self.transforms[k](h)
    return z, (gates if len(gates) == len(views) else []), attention
