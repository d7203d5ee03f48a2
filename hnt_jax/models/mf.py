"""MF-BPR on the target behavior: ŷ_ui = ⟨e_u, e_i⟩ with ID embeddings, no graph."""
from __future__ import annotations

from hnt_jax.models.base import EmbeddingRecommender, Embeddings


class MF(EmbeddingRecommender):

  def embed(self, graphs) -> Embeddings:
    return Embeddings(self.user_table, self.item_table)
