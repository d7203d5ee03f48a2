"""HNT: cascade behavior encoder + negative-transfer gating + hesitation sets, scored by the pair evidence
and a bounded collaborative part (docs/method.md sections 1-4).

  ŷ_ui = s_θ(x_ui) + cos(z_u, z_i) / τ_cf
  L = L_rank + λ_aux Σ_k L_BPR(k, e^k) + λ_h L_hes + λ_c L_conv + λ_s L_sim + λ_2 ‖E⁰_batch‖² / B

s_θ is the pair scorer over the evidence of hnt_jax.models.evidence (the training purchase left out of its
own counts); L_rank the softmax of each training purchase over all items. The hesitation sets are a Flax
variable collection ("hesitation"), refreshed by `refresh` and saved in checkpoints with the parameters.

One model class, as the other models are: embeddings out, loss, scores, refresh and diagnostics read as one
unit, so the file is longer than most; the parts' maths are in encoder.py, transfer.py, hesitation.py and
models/evidence.py.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from hnt_jax.graph import LeftOutEdges, left_out_edges
from hnt_jax.models import evidence
from hnt_jax.models.base import Recommender, behavior_bpr, l2_batch, normal_init
from hnt_jax.models.hnt import hesitation as hes_lib
from hnt_jax.models.hnt.encoder import encode_behaviors
from hnt_jax.models.hnt.transfer import NegativeTransfer, info_nce
from hnt_jax.signals import WeakSignals, first_users


@flax.struct.dataclass
class HNTEmbeddings:
  users: jax.Array  # z_u [M, d]
  items: jax.Array  # z_i = e_i^K [N, d]
  beh_users: jax.Array  # e_u^k for auxiliary k: [K-1, M, d]
  beh_items: jax.Array  # [K-1, N, d]
  gates: tuple  # per auxiliary behavior, [E_k]
  # with the pair evidence: s_θ of every item without pair evidence [N], and of every user's weak-signal
  # candidates [M, C]; computed only for evaluation (the loss scores its own users)
  item_evidence: jax.Array
  cand_evidence: jax.Array


# the choices of HNT's string settings (checked by hnt_jax.config_checks before any data loads)
CONV_EMBEDDINGS = ("all", "auxiliary", "none")


class HNT(Recommender):
  """HNT (docs/method.md). Its fields are its settings and their defaults: `config.model.hnt` is built from
  them, so `HNT(n_users=..., n_items=..., n_behaviors=...)` is the model the command line trains."""
  n_behaviors: int = 3
  embed_dim: int = 64
  n_layers: int = 2
  init_std: float = 0.1
  l2: float = 1e-4
  encoder: str = "cascade"  # cascade | parallel
  residual: bool = False  # cascade: behavior k starts from E_{k-1} + E⁰
  use_negative_transfer: bool = True  # False: every gate g_uj = 1 (plain mean fusion)
  use_hesitation: bool = True  # False: no conversion model, no hesitation sets, no L_hes, no fusion
  use_sim_loss: bool = True  # L_sim, the co-purchase InfoNCE that trains the similarity space
  sim_dim: int = 64  # d' of the item-similarity space φ
  gate_temperature: float = 0.2  # τ
  sim_temperature: float = 0.2  # τ_s
  sim_batch: int = 1024  # L_sim over the batch's first sim_batch rows (0: every row)
  lambda_aux: float = 0.0  # λ_aux: BPR on each auxiliary behavior
  lambda_hes: float = 0.5  # λ_h
  lambda_conv: float = 0.1  # λ_c
  lambda_sim: float = 0.1  # λ_s
  conv_hidden: int = 64  # conversion MLP width
  conv_batch: int = 1024  # converting and weak-signal pairs sampled per step (each)
  conv_stop_gradient: bool = True  # conversion features use embeddings under stop_gradient
  conv_embeddings: str = "all"  # embedding products in x_ui: one of CONV_EMBEDDINGS
  hes_refresh_every: int = 5  # epochs between hesitation-set refreshes
  hes_threshold: float = 0.6  # τ_h
  hes_size: int = 8  # m
  hes_max_candidates: int = 128  # weak-signal candidates kept per user
  cf_candidates: int = 50  # collaborative candidates per user, scored with their pair evidence
  hes_beta: float = 0.0  # β: keeps hesitation items below real purchases
  # the score ŷ_ui = s_θ(x_ui) + cos(z_u, z_i) / τ_cf (docs/method.md section 4)
  use_evidence: bool = True  # the pair-evidence scorer s_θ (False: the collaborative part alone)
  scorer_hidden: int = 32  # units per hidden layer of s_θ
  scorer_layers: int = 2  # hidden layers of s_θ (0: linear in the evidence)
  scorer_standardize: bool = False  # s_θ's inputs shifted and scaled by their moments over the candidates
  cf_temperature: float = 2.0  # τ_cf: the collaborative part lies in [-1/τ_cf, 1/τ_cf]
  # S: L_rank's partition sum outside the user's candidates estimated from S items drawn per step from
  # q ∝ exp(s_θ without pair evidence) (0: summed over every item)
  softmax_samples: int = 1024
  # each loss row's propagation and purchase prototype go without the row's own purchase edge, as the
  # evaluation's graph goes without the held-out purchase
  leave_out_edges: bool = True
  # the share of L_rank's rows whose purchase s_θ scores as an item its user never touched (its auxiliary
  # pairs hidden from its pair evidence), for splits whose held-out items the user never touched
  unseen_purchases: float = 0.0
  # training steps gate only their own users' auxiliary edges, in a buffer of this share of each behavior's
  # edges (exact: a step whose users hold more edges gates every edge); 0: always every edge
  gate_edge_budget: float = 0.5

  def graph_extras(self, ds) -> dict:
    """The weak-signal tables HNT reads (`Graphs.weak`), built once on the host."""
    from hnt_jax.signals import weak_signals
    if not ds.auxiliary:
      return {}
    weak = weak_signals(ds, self.hes_max_candidates, self.cf_candidates)
    return {"weak": evidence.with_evidence_tables(weak) if self.evidence_on else weak}

  @property
  def n_aux(self) -> int:
    return self.n_behaviors - 1

  @property
  def refresh_every(self) -> int:
    return self.hes_refresh_every if self.hesitation_on else 0

  @property
  def hesitation_on(self) -> bool:
    return self.use_hesitation and self.n_aux > 0

  @property
  def evidence_on(self) -> bool:
    return self.use_evidence and self.n_aux > 0

  def setup(self):
    init = normal_init(self.init_std)
    self.user_table = self.param("users", init, (self.n_users, self.embed_dim))
    self.item_table = self.param("items", init, (self.n_items, self.embed_dim))
    if self.n_aux:
      self.transfer = NegativeTransfer(n_aux=self.n_aux, embed_dim=self.embed_dim, sim_dim=self.sim_dim,
                                       temperature=self.gate_temperature,
                                       use_gates=self.use_negative_transfer)
    if self.hesitation_on:
      self.conversion = hes_lib.ConversionModel(hidden=self.conv_hidden)
      m, size = self.n_users, self.hes_size
      self.hes_items = self.variable("hesitation", "items", lambda: jnp.zeros((m, size), jnp.int32))
      self.hes_mask = self.variable("hesitation", "mask", lambda: jnp.zeros((m, size), bool))
      self.hes_conf = self.variable("hesitation", "conf", lambda: jnp.zeros((m, size), jnp.float32))
    if self.evidence_on:
      self.scorer = evidence.PairScorer(hidden=self.scorer_hidden, layers=self.scorer_layers,
                                        standardize=self.scorer_standardize)

  # --- representations -------------------------------------------------------------------------------

  def embed(self, graphs) -> HNTEmbeddings:
    """All representations, and the evidence scores of every item and every user's candidates."""
    emb = self.representations(graphs)
    if self.evidence_on and not self.is_initializing():
      emb = emb.replace(item_evidence=evidence.item_scores(self.scorer, graphs.weak),
                        cand_evidence=evidence.user_pair_scores(self.scorer, graphs.weak))
    return emb

  def representations(self, graphs, active: Optional[jax.Array] = None,
                      left_out: Optional[LeftOutEdges] = None) -> HNTEmbeddings:
    """z, the per-behavior embeddings and the gates. With `active` (bool [M]), `users` rows are exact only
    for the active users and no gates are returned (the training loss reads only its own users;
    `NegativeTransfer`). `left_out`: target edges the propagation and the prototypes go without."""
    ego = jnp.concatenate([self.user_table, self.item_table], axis=0)
    outs = encode_behaviors(graphs.per_behavior, ego, self.n_layers, self.encoder, self.residual, left_out)
    m = self.n_users
    user_t, item_t = outs[-1][:m], outs[-1][m:]
    aux = outs[:-1]
    if self.n_aux:
      z, gates, _ = self.transfer(graphs.per_behavior[:-1], graphs.target, user_t, item_t,
                                  [o[m:] for o in aux], active=active, edge_budget=self.gate_edge_budget,
                                  left_out=left_out)
      beh_users = jnp.stack([o[:m] for o in aux])
      beh_items = jnp.stack([o[m:] for o in aux])
    else:
      z, gates = user_t, ()
      beh_users = jnp.zeros((0, m, self.embed_dim))
      beh_items = jnp.zeros((0, self.n_items, self.embed_dim))
    return HNTEmbeddings(users=z, items=item_t, beh_users=beh_users, beh_items=beh_items, gates=tuple(gates),
                         item_evidence=jnp.zeros((0,)), cand_evidence=jnp.zeros((0, 0)))

  def conversion_logits(self, graphs, emb: HNTEmbeddings, users, items, aux_flags) -> jax.Array:
    """c_θ(x_ui) for pairs of any shape (embeddings under stop_gradient by default).

    `conv_embeddings` picks the embedding products in x_ui: "all" (docs/method.md), "auxiliary" (without
    z_u ⊙ z_i, which memorizes the training purchases that are exactly C's labels) or "none" (flags and
    statistics only)."""
    beh_users, beh_items = emb.beh_users, emb.beh_items
    z_users, z_items = emb.users, emb.items
    if self.conv_embeddings == "none":
      beh_users, beh_items = beh_users[:0], beh_items[:0]
    if self.conv_embeddings != "all":
      z_users, z_items = z_users[:, :0], z_items[:, :0]
    tables = (beh_users, beh_items, z_users, z_items)
    if self.conv_stop_gradient:
      tables = jax.lax.stop_gradient(tables)
    x = hes_lib.pair_features(graphs.weak, users, items, aux_flags, *tables)
    return self.conversion(x)

  def collaborative(self, emb: HNTEmbeddings, users, items=None) -> jax.Array:
    """cos(z_u, z_i) / τ_cf: for pairs (users, items of the same shape), or [B, N] against every item."""
    u = _unit(emb.users[users])
    if items is None:
      return u @ _unit(emb.items).T / self.cf_temperature
    return jnp.sum(u * _unit(emb.items[items]), axis=-1) / self.cf_temperature

  def pair_scores(self, graphs, emb: HNTEmbeddings, users, items, left_out=None) -> jax.Array:
    """ŷ for pairs (users [B], items [B]) as evaluation scores them (no pair left out; `left_out` as in
    `evidence.features`, for the rows of a loss)."""
    y = self.collaborative(emb, users, items)
    if self.evidence_on:
      known, values = evidence.lookup(graphs.weak, users, items[:, None])
      x = evidence.features(graphs.weak, users, items[:, None], known, values, jnp.zeros((users.shape[0], 1)),
                            left_out)
      y = y + evidence.score_pairs(self.scorer, graphs.weak, x)[:, 0]
    return y

  def score(self, graphs, emb: HNTEmbeddings, users, left_out=None) -> jax.Array:
    """Scores of all items for `users`: the collaborative part, plus s_θ (each item's evidence-free score,
    and the pair score on the user's weak-signal candidates; training purchases, which evaluation masks,
    get the former). `left_out`: as in `evidence.features`, for the rows of the loss."""
    scores = self.collaborative(emb, users)
    if self.evidence_on:
      if emb.item_evidence.shape[0] and left_out is None:  # computed once for every user by `embed`
        items, cand = emb.item_evidence, emb.cand_evidence[users]
      else:
        items = evidence.item_scores(self.scorer, graphs.weak)
        cand = evidence.candidate_scores(self.scorer, graphs.weak, users, left_out)
      base = jnp.broadcast_to(items[None, :], scores.shape)
      scores = scores + evidence.scatter_candidates(graphs.weak, base, cand, users)
    return scores

  # --- objective ---------------------------------------------------------------------------------------

  def loss(self, graphs, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    users, pos, neg = batch["users"], batch["pos"], batch["neg"]
    conv_pairs = self._conversion_pairs(graphs) if self.hesitation_on else None
    edges = left_out_edges(graphs.target, users, pos) if self.leave_out_edges else None
    emb = self.representations(graphs, self._active_users(users, conv_pairs), edges)
    left_out = pos if self.evidence_on else None  # the purchase each row of the loss leaves out
    y_pos = self.collaborative(emb, users, pos)
    if self.evidence_on:
      unseen = evidence.unseen_rows(self, users, self.unseen_purchases)
      y_pos = y_pos + evidence.purchase_scores(self.scorer, graphs.weak, users, pos, unseen)
    if self.softmax_samples:
      main = self._sampled_rank_loss(graphs, emb, users, y_pos, left_out)
    else:
      scores = self.score(graphs, emb, users, left_out)
      main = evidence.softmax_loss(scores, y_pos, users, pos, graphs.target.rows)
    reg = l2_batch(self.user_table, self.item_table, batch)
    total = main + self.l2 * reg
    metrics = {"softmax": main, "l2": reg}
    if self.lambda_aux and self.n_aux:
      aux = self._auxiliary_bpr(graphs, emb, users.shape[0])
      total, metrics["aux_bpr"] = total + self.lambda_aux * aux, aux
    if self.n_aux and self.use_negative_transfer and self.use_sim_loss and self.lambda_sim:
      sim = self._similarity_loss(graphs, emb, users, pos)
      total, metrics["sim"] = total + self.lambda_sim * sim, sim
    if self.hesitation_on:
      conv = self._conversion_loss(graphs, emb, conv_pairs)
      total, metrics["conv"] = total + self.lambda_conv * conv, conv
      if self.lambda_hes:
        y_neg = self.pair_scores(graphs, emb, users, neg, left_out)
        hes = self._hesitation_loss(graphs, emb, users, y_pos, y_neg, left_out)
        total, metrics["hes"] = total + self.lambda_hes * hes, hes
    return total, metrics

  def _sampled_rank_loss(self, graphs, emb: HNTEmbeddings, users, y_pos, left_out) -> jax.Array:
    """L_rank with the partition sum outside each row's candidates estimated from `softmax_samples` items
    drawn from q ∝ exp(s_θ(i) without pair evidence), one draw shared by the batch
    (`evidence.sampled_softmax_loss`): the candidates and the purchase are scored exactly, the other
    items' scores differ from their draw's log q only by the bounded collaborative part."""
    u = _unit(emb.users[users]) / self.cf_temperature
    items = _unit(emb.items)
    b = users.shape[0]
    if self.evidence_on:
      weak = graphs.weak
      base = evidence.item_scores(self.scorer, weak)
      cand, cand_mask, _, _ = evidence.candidates(weak, users)
      exact = (evidence.candidate_scores(self.scorer, weak, users, left_out)
               + graphs.target.ops.row_dots(graphs.target, u, items, cand))
    else:
      base = jnp.zeros((self.n_items,))
      cand, cand_mask, exact = (jnp.zeros((b, 0), jnp.int32), jnp.zeros((b, 0), bool), jnp.zeros((b, 0)))
    log_q = jax.nn.log_softmax(jax.lax.stop_gradient(base))
    drawn = evidence.draw(self.make_rng("sample"), log_q, self.softmax_samples)
    sampled = u @ items[drawn].T + base[drawn][None, :]
    bought, bought_mask = graphs.target.rows.padded(users)
    excluded = (evidence.contains(bought, bought_mask, drawn) | evidence.contains(cand, cand_mask, drawn))
    return evidence.sampled_softmax_loss(exact, cand_mask, y_pos, sampled, log_q[drawn], excluded)

  def _auxiliary_bpr(self, graphs, emb: HNTEmbeddings, b: int) -> jax.Array:
    """BPR on each auxiliary behavior's own embeddings (random edges, exact negatives)."""
    losses = [behavior_bpr(self.make_rng("sample"), g, emb.beh_users[k], emb.beh_items[k], b, self.n_items)
              for k, g in enumerate(graphs.per_behavior[:-1])]
    return sum(losses) / len(losses)

  def _similarity_loss(self, graphs, emb: HNTEmbeddings, users, pos) -> jax.Array:
    """L_sim: for each batch (u, i⁺), another purchase i' of u is the positive; other rows negatives. With
    `sim_batch`, over the batch's first rows only (a batch is a random draw of training purchases)."""
    if 0 < self.sim_batch < users.shape[0]:
      users, pos = users[:self.sim_batch], pos[:self.sim_batch]
    rows = graphs.target.rows
    items, mask = rows.padded(users)
    other = mask & (items != pos[:, None])
    keys = jnp.where(other, jax.random.uniform(self.make_rng("sample"), other.shape), -1.0)
    partner = jnp.take_along_axis(items, jnp.argmax(keys, axis=1)[:, None], axis=1)[:, 0]
    valid = jnp.any(other, axis=1)
    phi = self.transfer.phi(emb.items[jnp.concatenate([pos, partner])])
    b = pos.shape[0]
    return info_nce(phi[:b], phi[b:], valid, self.sim_temperature)

  def _active_users(self, users, conv_pairs) -> Optional[jax.Array]:
    """Users whose z the loss reads (the batch's, and the conversion pairs' when x_ui holds z_u ⊙ z_i), as a
    mask [M]; None when negative transfer is computed on every edge anyway."""
    if not (self.gate_edge_budget and self.n_aux and self.use_negative_transfer):
      return None
    active = jnp.zeros((self.n_users,), bool).at[users].set(True)
    if conv_pairs is not None and self.conv_embeddings == "all":
      active = active.at[conv_pairs[0]].set(True)
    return active

  def _conversion_pairs(self, graphs):
    """conv_batch converting and conv_batch weak-signal pairs: (users, items, aux flags, labels)."""
    weak = graphs.weak
    key_c, key_w = jax.random.split(self.make_rng("sample"))
    c = jax.random.randint(key_c, (self.conv_batch,), 0, weak.conv_users.shape[0])
    w = jax.random.randint(key_w, (self.conv_batch,), 0, weak.weak_users.shape[0])
    users = jnp.concatenate([weak.conv_users[c], weak.weak_users[w]])
    items = jnp.concatenate([weak.conv_items[c], weak.weak_items[w]])
    flags = jnp.concatenate([weak.conv_aux[c], weak.weak_aux[w]])
    labels = jnp.concatenate([jnp.ones(self.conv_batch), jnp.zeros(self.conv_batch)])
    return users, items, flags, labels

  def _conversion_loss(self, graphs, emb: HNTEmbeddings, pairs) -> jax.Array:
    """L_conv: binary cross-entropy, converting pairs label 1, weak-signal pairs label 0."""
    users, items, flags, labels = pairs
    logits = self.conversion_logits(graphs, emb, users, items, flags)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))

  def _hesitation_loss(self, graphs, emb, users, y_pos, y_neg, left_out=None) -> jax.Array:
    hes = {"items": self.hes_items.value, "mask": self.hes_mask.value, "conf": self.hes_conf.value}
    items, conf, valid = hes_lib.sample_from_sets(self.make_rng("sample"), hes, users)
    y_hes = self.pair_scores(graphs, emb, users, items, left_out)
    return hes_lib.hesitation_loss(y_hes, y_pos, y_neg, conf, valid, self.hes_beta)

  # --- hesitation sets and diagnostics -----------------------------------------------------------------

  def candidate_probabilities(self, graphs) -> jax.Array:
    """σ(c_θ(x_ui)) of every padded weak-signal candidate, [M, C]."""
    emb = self.representations(graphs)
    return hes_lib.score_candidates(
        lambda u, items, aux: self.conversion_logits(graphs, emb, u, items, aux), self._users_weak(graphs))

  def _users_weak(self, graphs) -> WeakSignals:
    """`graphs.weak` for the code that covers every user: its per-user tables' M rows (a mesh pads them)."""
    return first_users(graphs.weak, self.n_users)

  def refresh(self, graphs) -> None:
    """Rebuilds the hesitation sets (call with mutable=["hesitation"])."""
    if not self.hesitation_on:
      return
    chosen = hes_lib.select_hesitations(self.candidate_probabilities(graphs), self._users_weak(graphs),
                                        self.hes_threshold, self.hes_size)
    self.hes_items.value, self.hes_mask.value, self.hes_conf.value = (chosen["items"], chosen["mask"],
                                                                      chosen["conf"])

  def diagnostics(self, graphs, truth, users) -> dict[str, jax.Array]:
    """Mean gate per auxiliary behavior; hesitation coverage and precision against `truth` (UserRows of
    held-out items, over `users`), beside the precision of m random weak-signal candidates; the scale of
    the two parts of a score: `score_std`, the spread (std over all items) of ⟨z_u, z_i⟩, averaged over
    `users`, and with score fusion `fusion_alpha`, α (the largest bonus with `fusion_value=probability`)."""
    out: dict[str, Any] = {}
    emb = self.representations(graphs)
    if self.n_aux and self.use_negative_transfer:
      for b, gate in zip(graphs.behaviors[:-1], emb.gates):
        out[f"gate_mean/{b}"] = jnp.mean(gate)
    out["score_std"] = score_spread(_unit(emb.users[users]), _unit(emb.items)) / self.cf_temperature
    if self.hesitation_on:
      hes = {"items": self.hes_items.value, "mask": self.hes_mask.value}
      out["hesitation_coverage"] = jnp.mean(jnp.any(hes["mask"], axis=1))
      out["hesitation_size"] = jnp.mean(jnp.sum(hes["mask"], axis=1))
      out["hesitation_precision"] = hes_lib.set_precision(hes, truth, users)
      rand = hes_lib.random_choice(jax.random.PRNGKey(0), self._users_weak(graphs), self.hes_size)
      out["random_precision"] = hes_lib.set_precision(rand, truth, users)
    return out


def _unit(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def score_spread(users: jax.Array, items: jax.Array) -> jax.Array:
  """Mean over the rows of `users` of the std over all `items` of ⟨z_u, z_i⟩, without forming the
  [users, items] score matrix: var_u = z_uᵀ Σ z_u with Σ the items' covariance (d x d)."""
  centered = items - jnp.mean(items, axis=0)
  cov = centered.T @ centered / items.shape[0]
  var = jnp.einsum("ud,de,ue->u", users, cov, users)
  return jnp.mean(jnp.sqrt(jnp.maximum(var, 0.0)))

