"""The weak-signal heuristic of docs/method.md section 6 (no learning).

score(u, i) = Σ_k w_k · [u did auxiliary behavior k on i] + β · popularity(i) / max popularity,
with w_k rising along the cascade (1, 2, ... by default) and popularity the item's training purchase count.
It is the floor any multi-behavior model must clear, and a check on the evaluator.
"""
from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp

from hnt_jax.models.base import Recommender


class Heuristic(Recommender):
  weights: str = ""  # comma-separated, one per auxiliary behavior; empty: 1, 2, ..., K-1
  popularity: float = 0.5  # weight of the item's purchase popularity, normalized to [0, 1]
  trainable: ClassVar[bool] = False

  def embed(self, graphs) -> jnp.ndarray:
    counts = jnp.zeros(self.n_items, jnp.float32).at[graphs.target.items].add(1.0)
    return counts / jnp.maximum(counts.max(), 1.0)

  def score(self, graphs, emb, users):
    aux = graphs.per_behavior[:-1]
    weights = parse_weights(self.weights) or tuple(float(k + 1) for k in range(len(aux)))
    if len(weights) != len(aux):
      raise ValueError(f"heuristic: {len(weights)} weights for {len(aux)} auxiliary behaviors")
    scores = self.popularity * jnp.broadcast_to(emb[None, :], (users.shape[0], self.n_items))
    for w, g in zip(weights, aux):
      scores = scores + w * g.rows.dense(users)
    return scores

  def loss(self, graphs, batch):
    zero = jnp.zeros((), jnp.float32)
    return zero, {}


def parse_weights(text: str) -> tuple[float, ...]:
  """"1,2.5" -> (1.0, 2.5); "" -> ()."""
  return tuple(float(w) for w in str(text).split(",") if w.strip())
