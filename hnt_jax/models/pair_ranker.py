"""pair_ranker: the pair evidence alone (hnt_jax.models.evidence), scored by a small MLP or a logistic
scorer and trained with the same softmax over all items as HNT (each training purchase against every item
the user did not buy). No embeddings, no graph: the baseline that shows what the per-pair features carry
by themselves.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from hnt_jax.models import evidence
from hnt_jax.models.base import Recommender


@flax.struct.dataclass
class PairScores:
  items: jax.Array  # s_θ of each item without pair evidence [N]
  cands: jax.Array  # s_θ of each user's weak-signal candidates [M, C]


class PairRanker(Recommender):
  n_behaviors: int = 3
  hidden: int = 32  # units per hidden layer of the scorer
  layers: int = 2  # hidden layers; 0: logistic
  standardize: bool = False  # each feature shifted and scaled by its moments over the candidates
  max_candidates: int = 128  # weak-signal candidates kept per user
  cf_candidates: int = 50  # collaborative candidates per user (items bought by those who bought the same)
  # the share of the loss rows whose purchase is scored as an item its user never touched (as HNT's)
  unseen_purchases: float = 0.0

  def graph_extras(self, ds) -> dict:
    from hnt_jax.errors import ConfigError
    from hnt_jax.signals import weak_signals
    if not ds.auxiliary:
      raise ConfigError(f"model.name=pair_ranker needs at least one auxiliary behavior; {ds.name} has only "
                        f"{ds.target}")
    return {"weak": evidence.with_evidence_tables(weak_signals(ds, self.max_candidates, self.cf_candidates))}

  def setup(self):
    self.scorer = evidence.PairScorer(hidden=self.hidden, layers=self.layers, standardize=self.standardize)

  def embed(self, graphs) -> PairScores:
    return PairScores(items=evidence.item_scores(self.scorer, graphs.weak),
                      cands=evidence.user_pair_scores(self.scorer, graphs.weak))

  def score(self, graphs, emb: PairScores, users) -> jax.Array:
    base = jnp.broadcast_to(emb.items[None, :], (users.shape[0], self.n_items))
    return evidence.scatter_candidates(graphs.weak, base, emb.cands[users], users)

  def loss(self, graphs, batch):
    users, pos, weak = batch["users"], batch["pos"], graphs.weak
    base = jnp.broadcast_to(evidence.item_scores(self.scorer, weak)[None, :], (users.shape[0], self.n_items))
    cand = evidence.candidate_scores(self.scorer, weak, users, pos)
    scores = evidence.scatter_candidates(weak, base, cand, users)
    unseen = evidence.unseen_rows(self, users, self.unseen_purchases)
    loss = evidence.softmax_loss(scores, evidence.purchase_scores(self.scorer, weak, users, pos, unseen), users,
                                 pos, graphs.target.rows)
    return loss, {"softmax": loss}
