"""LightGCN: ID embeddings propagated over a normalized bipartite adjacency, mean over layers.

`graph="target"` propagates over the target behavior only (LightGCN); `graph="merged"` over all behaviors
merged into one graph (LightGCN-G).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from hnt_jax.graph import propagate
from hnt_jax.models.base import Embeddings, Recommender, bpr_loss, l2_batch


def light_propagation(graph, ego: jnp.ndarray, n_layers: int) -> jnp.ndarray:
  """mean_{l=0..L} Â^l · ego over `graph` (a BehaviorGraph)."""
  total, x = ego, ego
  for _ in range(n_layers):
    x = propagate(graph, x)
    total = total + x
  return total / (n_layers + 1)


class LightGCN(Recommender):
  embed_dim: int = 64
  n_layers: int = 2
  init_std: float = 0.1
  l2: float = 1e-4
  graph: str = "target"  # target | merged

  def setup(self):
    init = nn.initializers.normal(self.init_std)
    self.user_table = self.param("users", init, (self.n_users, self.embed_dim))
    self.item_table = self.param("items", init, (self.n_items, self.embed_dim))

  def behavior_graph(self, graphs):
    return graphs.merged if self.graph == "merged" else graphs.target

  def embed(self, graphs) -> Embeddings:
    ego = jnp.concatenate([self.user_table, self.item_table], axis=0)
    out = light_propagation(self.behavior_graph(graphs), ego, self.n_layers)
    return Embeddings(out[:self.n_users], out[self.n_users:])

  def loss(self, graphs, batch):
    bpr = bpr_loss(self.embed(graphs), batch)
    reg = l2_batch(self.user_table, self.item_table, batch)
    return bpr + self.l2 * reg, {"bpr": bpr, "l2": reg}
