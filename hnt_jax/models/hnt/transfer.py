"""Negative-transfer suppression in auxiliary fusion (METHOD.md section 2).

φ(i) = normalize(P e_i^K) is a learned item-similarity space; π_u = normalize(Σ_{i∈R_K(u)} φ(i)) is the
user's purchase prototype (normalize(P e_u^K) for users without purchases). Every auxiliary edge (u, j) of
behavior k gets a reliability gate g_uj = σ((⟨φ(j), π_u⟩ − δ_k) / τ), computed for all edges at once; the
gated view h_u^k = Σ_j g_uj e_j^k / Σ_j g_uj is a sparse product with the gates as BCOO data. Views are fused
into the user representation by behavior attention:
  z_u = e_u^K + Σ_k a_uk W_k h_u^k,   a_u = softmax_k(q · tanh(V [e_u^K ; h_u^k])).
L_sim (InfoNCE over co-purchase pairs) teaches φ that "similar" means "bought by the same people".
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import sparse as jsparse

from hnt_jax.graph import BehaviorGraph


def normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def edge_gates(graph: BehaviorGraph, phi: jax.Array, prototypes: jax.Array, delta: jax.Array,
               temperature: float) -> jax.Array:
  """g_uj for every edge of `graph`, in its CSR order: σ((⟨φ(j), π_u⟩ − δ) / τ)."""
  s = jnp.sum(phi[graph.items] * prototypes[graph.users], axis=-1)
  return jax.nn.sigmoid((s - delta) / temperature)


def gated_mean(graph: BehaviorGraph, weights: jax.Array, item_emb: jax.Array, n_users: int) -> jax.Array:
  """h_u = Σ_j w_uj e_j / Σ_j w_uj over the user's edges (0 for users without edges). The incidence's own
  data (1 unless a caller re-weights edges, as `influence.edge_influence` does) multiplies the weights."""
  weights = weights * graph.incidence.data
  weighted = jsparse.BCOO((weights, graph.incidence.indices), shape=graph.incidence.shape,
                          indices_sorted=True, unique_indices=True)
  total = weighted @ item_emb
  norm = jax.ops.segment_sum(weights, graph.users, num_segments=n_users, indices_are_sorted=True)
  return total / jnp.maximum(norm, 1e-8)[:, None]


def info_nce(anchors: jax.Array, positives: jax.Array, mask: jax.Array, temperature: float) -> jax.Array:
  """InfoNCE with in-batch negatives: row b's positive is positives[b]; rows with mask False are ignored."""
  logits = anchors @ positives.T / temperature
  logits = jnp.where(mask[None, :], logits, -1e9)  # masked rows are not negatives either
  loss = -jax.nn.log_softmax(logits, axis=-1).diagonal()
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
    summed = target.incidence @ phi_items
    has_purchase = jnp.linalg.norm(summed, axis=-1, keepdims=True) > 0
    return jnp.where(has_purchase, normalize(summed), normalize(self.similarity(user_emb)))

  def __call__(self, aux_graphs: Sequence[BehaviorGraph], target: BehaviorGraph, user_target: jax.Array,
               item_target: jax.Array, aux_items: Sequence[jax.Array]):
    """(z_u [M, d], gates per auxiliary behavior, attention [M, K-1])."""
    n_users = user_target.shape[0]
    gates, views = [], []
    if self.use_gates:
      phi_items = self.phi(item_target)
      protos = self.prototypes(target, phi_items, user_target)
    for k, (g, items_k) in enumerate(zip(aux_graphs, aux_items)):
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
    return z, gates, attention
