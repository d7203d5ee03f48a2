"""MF-BPR on the target behavior: ŷ_ui = ⟨e_u, e_i⟩ with ID embeddings, no graph."""
from __future__ import annotations

import flax.linen as nn

from hnt_jax.models.base import Embeddings, Recommender, bpr_loss, l2_batch


class MF(Recommender):
  embed_dim: int = 64
  init_std: float = 0.1
  l2: float = 1e-4

  def setup(self):
    init = nn.initializers.normal(self.init_std)
    self.user_table = self.param("users", init, (self.n_users, self.embed_dim))
    self.item_table = self.param("items", init, (self.n_items, self.embed_dim))

  def embed(self, graphs) -> Embeddings:
    return Embeddings(self.user_table, self.item_table)

  def loss(self, graphs, batch):
    bpr = bpr_loss(self.embed(graphs), batch)
    reg = l2_batch(self.user_table, self.item_table, batch)
    return bpr + self.l2 * reg, {"bpr": bpr, "l2": reg}
