"""Cascade multi-behavior baselines in the same framework as HNT (docs/method.md section 6).

CRGCN-style (`crgcn`): cascading residual blocks. Behaviors are visited in cascade order; block k propagates
its input over behavior k's graph with `n_layers` LightGCN layers (one by default, as in CRGCN) and adds the
input back:  E_k = E_{k-1} + mean_{l=1..L} Â_k^l E_{k-1},  E_0 = E⁰. Training is multi-task: BPR on each
behavior with that behavior's block output (the target's on the training batch, every auxiliary behavior's
on random edges of its own), auxiliary terms weighted by `multitask_weight`. Scores use the target block.
Left out: CRGCN's per-behavior loss weights tuned per dataset and its message dropout.

MB-CGCN-style (`mbcgcn`): behavior blocks chained through learned linear transforms. Block 1 propagates E⁰
over behavior 1 (LightGCN, `n_layers` layers, mean over layers 0..L); block k propagates W_{k-1} E_{k-1};
the final embedding is the sum of the blocks' outputs; BPR on the target only. Left out: MB-CGCN's
pretraining of E⁰ with a separate MF model, which its released code uses but does not document; without it
the numbers are those of training from scratch (a known reproduction gap).
"""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from hnt_jax.graph import propagate
from hnt_jax.models.base import EmbeddingRecommender, Embeddings, behavior_bpr, bpr_loss, l2_batch
from hnt_jax.models.lightgcn import light_propagation


def residual_block(graph, x: jnp.ndarray, n_layers: int) -> jnp.ndarray:
  """x + mean_{l=1..L} Â^l x (CRGCN's block: the propagated part only, plus the input)."""
  total, h = jnp.zeros_like(x), x
  for _ in range(n_layers):
    h = propagate(graph, h)
    total = total + h
  return x + total / n_layers


class CRGCN(EmbeddingRecommender):
  n_layers: int = 1  # LightGCN layers per behavior block (one in CRGCN)
  multitask_weight: float = 1.0  # weight of the auxiliary behaviors' BPR terms
  block_settings: ClassVar[tuple[str, ...]] = ("n_layers",)  # its own n_layers, not config.model.n_layers

  def blocks(self, graphs) -> list[jnp.ndarray]:
    """[E_1, ..., E_K], each [M+N, d]."""
    outs, x = [], self.ego()
    for graph in graphs.per_behavior:
      x = residual_block(graph, x, self.n_layers)
      outs.append(x)
    return outs

  def embed(self, graphs) -> Embeddings:
    last = self.blocks(graphs)[-1]
    return Embeddings(last[:self.n_users], last[self.n_users:])

  def loss(self, graphs, batch):
    outs = self.blocks(graphs)
    m = self.n_users
    bpr = bpr_loss(Embeddings(outs[-1][:m], outs[-1][m:]), batch)
    reg = l2_batch(self.user_table, self.item_table, batch)
    total, metrics = bpr + self.l2 * reg, {"bpr": bpr, "l2": reg}
    if len(outs) > 1 and self.multitask_weight:
      b = batch["users"].shape[0]
      aux = [behavior_bpr(self.make_rng("sample"), g, o[:m], o[m:], b, self.n_items)
             for g, o in zip(graphs.per_behavior[:-1], outs[:-1])]
      aux_loss = sum(aux) / len(aux)
      total, metrics["aux_bpr"] = total + self.multitask_weight * aux_loss, aux_loss
    return total, metrics


class MBCGCN(EmbeddingRecommender):
  n_layers: int = 2
  n_behaviors: int = 3

  def setup(self):
    super().setup()
    self.transforms = [nn.Dense(self.embed_dim, use_bias=False, name=f"W_{k}")
                       for k in range(max(self.n_behaviors - 1, 0))]

  def blocks(self, graphs) -> list[jnp.ndarray]:
    outs, x = [], self.ego()
    for k, graph in enumerate(graphs.per_behavior):
      if k:
        x = self.transforms[k - 1](outs[-1])
      outs.append(light_propagation(graph, x, self.n_layers))
    return outs

  def embed(self, graphs) -> Embeddings:
    final = sum(self.blocks(graphs))
    return Embeddings(final[:self.n_users], final[self.n_users:])

