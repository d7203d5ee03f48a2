"""Negative-transfer suppression in auxiliary fusion (docs/method.md section 2).

φ(i) = normalize(P e_i^K) is a learned item-similarity space; π_u = normalize(Σ_{i∈R_K(u)} φ(i)) is the
user's purchase prototype (normalize(P e_u^K) for users without purchases). Every auxiliary edge (u, j) of
behavior k gets a reliability gate g_uj = σ((⟨φ(j), π_u⟩ − δ_k) / τ), computed for all edges at once, and
the gated view h_u^k = Σ_j g_uj e_j^k / Σ_j g_uj is the graph's sparse product `graph.ops.gated_view`
(`hnt_jax.sparse_ops`: XLA's BCOO with the gates as data, or the host's). Views are fused into the user
representation by behavior attention:
  z_u = e_u^K + Σ_k a_uk W_k h_u^k,   a_u = softmax_k(q · tanh(V [e_u^K ; h_u^k])).
L_sim (InfoNCE over co-purchase pairs) teaches φ that "similar" means "bought by the same people".
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hnt_jax.graph import BehaviorGraph, LeftOutEdges
from hnt_jax.models.base import normal_init


def normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


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
    self.att_q = self.param("q", normal_init(0.1), (self.attention_dim,))

  def phi(self, item_emb: jax.Array) -> jax.Array:
    return normalize(self.similarity(item_emb))

  def prototypes(self, target: BehaviorGraph, phi_items: jax.Array, user_emb: jax.Array,
                 left_out: Optional[LeftOutEdges] = None) -> jax.Array:
    """π_u = normalize(Σ_{i∈R_K(u)} φ(i)); normalize(P e_u^K) for users without purchases. With `left_out`,
    R_K(u) goes without those purchases."""
    summed = target.ops.incidence_matmul(target, phi_items)
    purchases = target.rows.degree(jnp.arange(summed.shape[0]))
    if left_out is not None:
      taken = (left_out.weights > 0).astype(summed.dtype)[:, None] * phi_items[left_out.items]
      summed = summed.at[left_out.users].add(-taken)
      purchases = purchases - left_out.counts
    has_purchase = (purchases > 0)[:, None]
    # (a sum without purchases is 0, where normalize's gradient is not finite: such rows take the fallback)
    safe = jnp.where(has_purchase, summed, 1.0)
    return jnp.where(has_purchase, normalize(safe), normalize(self.similarity(user_emb)))

  def __call__(self, aux_graphs: Sequence[BehaviorGraph], target: BehaviorGraph, user_target: jax.Array,
               item_target: jax.Array, aux_items: Sequence[jax.Array], active: Optional[jax.Array] = None,
               edge_budget: float = 0.0, left_out: Optional[LeftOutEdges] = None):
    """(z_u [M, d], gates per auxiliary behavior, attention [M, K-1]).

    With `active` (bool [M]) and an `edge_budget`, z_u is exact only for those users, and the gates may be
    computed only on their edges (`sparse_ops`: `gated_view`); no gates are returned then. `left_out`: target
    edges the prototypes go without."""
    gates, views = [], []
    if self.use_gates:
      phi_items = self.phi(item_target)
      protos = self.prototypes(target, phi_items, user_target, left_out)
    for k, (g, items_k) in enumerate(zip(aux_graphs, aux_items)):
      if self.use_gates:
        h, gate = g.ops.gated_view(g, phi_items, protos, items_k, self.delta[k], self.temperature, active,
                                   edge_budget)
      else:
        h, gate = g.ops.mean_view(g, items_k)
      views.append(h)
      if gate is not None:
        gates.append(gate)
    logits = jnp.stack([jnp.tanh(self.att_v(jnp.concatenate([user_target, h], -1))) @ self.att_q
                        for h in views], axis=-1)
    attention = jax.nn.softmax(logits, axis=-1)
    z = user_target
    for k, h in enumerate(views):
      z = z + attention[:, k:k + 1] * self.transforms[k](h)
    return z, (gates if len(gates) == len(views) else []), attention
