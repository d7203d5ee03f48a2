"""LightGCN: ID embeddings propagated over a normalized bipartite adjacency, mean over layers.

`graph="target"` propagates over the target behavior only (LightGCN); `graph="merged"` over all behaviors
merged into one graph (LightGCN-G).
"""
from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from hnt_jax.graph import LeftOutEdges, left_out_product, propagate
from hnt_jax.models.base import EmbeddingRecommender, Embeddings


def light_propagation(graph, ego: jnp.ndarray, n_layers: int,
                      left_out: Optional[LeftOutEdges] = None) -> jnp.ndarray:
  """mean_{l=0..L} Â^l · ego over `graph` (a BehaviorGraph); with `left_out`, Â without those edges."""
  total, x = ego, ego
  for _ in range(n_layers):
    y = propagate(graph, x)
    x = y if left_out is None else y - left_out_product(left_out, x)
    total = total + x
  return total / (n_layers + 1)


class LightGCN(EmbeddingRecommender):
  n_layers: int = 2
  graph: str = "target"  # target | merged

  def behavior_graph(self, graphs):
    return graphs.merged if self.graph == "merged" else graphs.target

  def embed(self, graphs) -> Embeddings:
    out = light_propagation(self.behavior_graph(graphs), self.ego(), self.n_layers)
    return Embeddings(out[:self.n_users], out[self.n_users:])
