"""Pair evidence: what the training data says about one (user, item) pair, as a feature vector, and the
scorer that turns it into a score (docs/method.md section 4).

For a pair (u, i), with A_u the items u has any auxiliary behavior on (viewed, carted, ...; `Graphs.weak`
holds them as the weak-signal candidates and the converting pairs):

* item evidence (every pair): log(1 + purchases of i), and per auxiliary behavior k: log(1 + users with k on
  i) and the smoothed share of those who bought i, (conv_k(i) + s·p_k) / (n_k(i) + s);
* pair evidence (only for i ∈ A_u, else 0): whether i ∈ A_u; u's flags on i per auxiliary behavior; u's
  activity, log(1 + |A_u|) and log(1 + items of each auxiliary behavior); u's smoothed conversion share;
  and the rank of i *among u's other A_u items* by purchases, by each conversion share and by each
  cross-behavior count below (the share of the others above it, ties counted half; the others' statistics
  as the training data holds them);
* cross-behavior counts, per behavior k, log(1 + (R_k R_kᵀ R_target)[u, i]): how often i was bought by
  users who share k-items with u (co-buy for the target, view->buy, cart->buy), for i ∈ A_u and for u's
  collaborative candidates (`WeakSignals.cf_items`: the items u never touched that are most co-bought with
  u's purchases), 0 for every other item.

A training purchase (u, i) is scored with its own purchase removed from every count of the pair (`loo` =
1): the counts then look as they will for a held-out purchase, which is not in them. Without this an item
bought once looks "always bought" to the scorer exactly on the pairs it trains on. Outside A_u it keeps
cross-behavior counts only where, so counted, it would be one of u's collaborative candidates. What every
item of a row is compared with, the user's converting count and the user's A_u items that the ranks count,
is taken in a loss row without the row's purchase for every item (`left_out`), as an evaluation row is
without its held-out item (`hnt_jax.experiments.views` measures how far each feature's training view is
from its evaluation view).

Because the pair evidence is zero outside A_u and the collaborative candidates, a user's scores over all
items are one vector over items (`item_scores`) with the `candidates`' entries replaced by their pair
scores (`user_pair_scores`): full ranking never evaluates the scorer on M x N pairs.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from hnt_jax.signals import WeakSignals

SMOOTHING = 5.0  # s: pseudo-counts at the behavior's global conversion share p_k
TIE = 1e-6  # conversion shares closer than this rank as ties (float32 rounding is ~1e-7 on [0, 1])


def n_features(n_aux: int) -> int:
  return (1 + 2 * n_aux) + (1 + n_aux) + (n_aux + 1 + 1) + n_ranked(n_aux) + (n_aux + 1)


def n_ranked(n_aux: int) -> int:
  """R, the statistics the ranks compare: purchases, the conversion share of each auxiliary behavior, and
  the cross-behavior count of each behavior."""
  return 1 + n_aux + (n_aux + 1)


def known_items(weak: WeakSignals, users: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A_u of `users` as padded tables: (items [B, Ca], mask [B, Ca], pair values [B, Ca, (K-1) + K]: the
  auxiliary flags, then the cross-behavior counts)."""
  return (jnp.concatenate([weak.cand_items[users], weak.conv_table_items[users]], axis=1),
          jnp.concatenate([weak.cand_mask[users], weak.conv_table_mask[users]], axis=1),
          jnp.concatenate([jnp.concatenate([weak.cand_aux[users], weak.cand_cross[users]], axis=-1),
                           jnp.concatenate([weak.conv_table_aux[users], weak.conv_cross[users]], axis=-1)],
                          axis=1))


def _without_flags(cross: jax.Array, k: int) -> jax.Array:
  """Pair values [..., (K-1) + K] of pairs outside A_u: no auxiliary flags, then the cross counts."""
  return jnp.concatenate([jnp.zeros(cross.shape[:-1] + (k,)), cross], axis=-1)


def _pair_tables(weak: WeakSignals, users: jax.Array, purchases: bool = False):
  """The tables that hold pair values, for `users`: A_u, then the collaborative candidates (and with
  `purchases` the training purchases outside A_u), as (items, mask, values) each."""
  outside = [(weak.cf_items, weak.cf_mask, weak.cf_cross)]
  if purchases:
    outside.append((weak.buy_items, weak.buy_mask, weak.buy_cross))
  return [known_items(weak, users)] + [(items[users], mask[users], _without_flags(cross[users], n_aux(weak)))
                                       for items, mask, cross in outside]


def lookup(weak: WeakSignals, users: jax.Array, items: jax.Array,
           purchases: bool = False) -> tuple[jax.Array, jax.Array]:
  """For pairs (users [B], items [B, n]): whether i ∈ A_u [B, n] and the pair values [B, n, (K-1) + K]:
  u's flags on i (0 outside A_u), then the cross-behavior counts where a table holds them (A_u, the
  collaborative candidates, and with `purchases` the training purchases; 0 elsewhere; the tables are
  disjoint)."""
  tables = _pair_tables(weak, users, purchases)
  matches = [(t_items[:, None, :] == items[:, :, None]) & t_mask[:, None, :] for t_items, t_mask, _ in tables]
  values = sum(jnp.einsum("bnc,bck->bnk", match.astype(jnp.float32), t_values)
               for match, (_, _, t_values) in zip(matches, tables))
  return jnp.any(matches[0], axis=-1), values


def candidates(weak: WeakSignals, users: jax.Array):
  """The items `users` are scored on with pair evidence: their weak-signal candidates, then their
  collaborative candidates, as (items, mask, known: in A_u, pair values), [B, C + F(, ...)]."""
  cand_mask, cf_mask = weak.cand_mask[users], weak.cf_mask[users]
  return (jnp.concatenate([weak.cand_items[users], weak.cf_items[users]], axis=1),
          jnp.concatenate([cand_mask, cf_mask], axis=1),
          jnp.concatenate([cand_mask, jnp.zeros_like(cf_mask)], axis=1),
          jnp.concatenate([jnp.concatenate([weak.cand_aux[users], weak.cand_cross[users]], axis=-1),
                           _without_flags(weak.cf_cross[users], n_aux(weak))], axis=1))


def _item_values(weak: WeakSignals, items: jax.Array, flags: jax.Array, loo: jax.Array,
                 hidden: jax.Array | None = None):
  """(purchases, conversion share per auxiliary behavior, users per auxiliary behavior), with the pair's
  own purchase removed where `loo` is 1 (its conversions only from the behaviors it has; the users of an
  auxiliary behavior hold no purchase), and the user's `hidden` auxiliary pairs on the item (a training
  purchase scored as never touched: `purchase_scores`) removed from them too."""
  counts, conv = weak.item_counts[items], weak.item_conv[items]
  aux = counts[..., :-1]
  if hidden is not None:
    flags, aux = flags + hidden, aux - hidden
  buys = jnp.maximum(counts[..., -1] - loo, 0.0)
  conv = jnp.maximum(conv - loo[..., None] * flags, 0.0)
  prior = weak.conv_prior[:-1]
  share = (conv + SMOOTHING * prior) / (aux + SMOOTHING)
  return buys, share, aux


def _left_out_entries(weak: WeakSignals, users: jax.Array, left_out: jax.Array | None) -> jax.Array:
  """[B, Ca] float: 1 at the entry of each row's left-out purchase in the user's A_u table (none when the
  purchase is outside A_u, or `left_out` is None)."""
  a_items, a_mask, _ = known_items(weak, users)
  if left_out is None:
    return jnp.zeros(a_items.shape)
  return ((a_items == left_out[:, None]) & a_mask).astype(jnp.float32)


def _stats(weak: WeakSignals, users: jax.Array, items: jax.Array, flags: jax.Array, counts: jax.Array,
           loo: jax.Array) -> jax.Array:
  """The statistics the ranks compare, [B, n, R]: purchases, the conversion shares, the cross-behavior
  counts, with the pair's own purchase removed where `loo` [B, n] is 1."""
  buys, share, _ = _item_values(weak, items, flags, loo)
  return _ranked(buys, share, _cross(weak, users, items, counts, loo))


def _ranked(buys: jax.Array, share: jax.Array, cross: jax.Array) -> jax.Array:
  """The layout of the ranked statistics [..., R] (`n_ranked`)."""
  return jnp.concatenate([buys[..., None], share, cross], axis=-1)


def with_evidence_tables(weak: WeakSignals, chunk: int = 512) -> WeakSignals:
  """`weak` with the tables built once (chunks of users, one after another) that every training step and
  evaluation reads: `known_sorted`, for every user the ranked statistics of its A_u items sorted ascending
  (+inf where padded), so that the ranks are binary searches (a loss row's left-out purchase, whose entry
  differs from the table's, is corrected for in `_ranks`); then `cand_features` and `cand_stats`, the
  features of every user's `candidates` as evaluation sees them and the statistics their ranks compare,
  which depend on the data only (a loss row's are these corrected for its left-out purchase:
  `candidate_features`)."""
  m = weak.cand_items.shape[0]
  n_chunks = -(-m // chunk)
  users = jnp.pad(jnp.arange(m, dtype=jnp.int32), (0, n_chunks * chunk - m)).reshape(n_chunks, chunk)

  def by_users(fn, w):
    out = jax.jit(lambda w, u: jax.lax.map(lambda c: fn(w, c), u))(w, users)
    return jax.tree.map(lambda t: t.reshape((n_chunks * chunk,) + t.shape[2:])[:m], out)

  weak = weak.replace(known_sorted=by_users(_sorted_stats, weak), cand_features=None, cand_stats=None)
  features_, stats = by_users(_candidate_tables, weak)
  mean, std = _feature_moments(features_, jnp.concatenate([weak.cand_mask, weak.cf_mask], axis=1))  # candidates' mask
  return weak.replace(cand_features=features_, cand_stats=stats, feature_mean=mean, feature_std=std)


@jax.jit
def _feature_moments(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and standard deviation [n_features] of the features x [M, C, n] over the entries of `mask`
  [M, C] (std 1 where a feature is constant there)."""
  w = mask.astype(jnp.float32)[..., None]
  n = jnp.maximum(jnp.sum(w), 1.0)
  mean = jnp.sum(x * w, axis=(0, 1)) / n
  std = jnp.sqrt(jnp.sum(jnp.square(x - mean) * w, axis=(0, 1)) / n)
  return mean, jnp.where(std > 1e-6, std, 1.0)


def _candidate_tables(weak: WeakSignals, users: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`users`' rows of `cand_features` and `cand_stats`, computed from the definitions."""
  items, _, known, values = candidates(weak, users)
  k = n_aux(weak)
  stats = _stats(weak, users, items, values[..., :k] * known[..., None], values[..., k:], jnp.zeros(items.shape))
  return features(weak, users, items, known, values, jnp.zeros(items.shape)), stats


def _sorted_stats(weak: WeakSignals, users: jax.Array) -> jax.Array:
  """`users`' rows of `known_sorted`, [B, Ca, R]."""
  a_items, a_mask, a_values = known_items(weak, users)
  k = n_aux(weak)
  values = _stats(weak, users, a_items, a_values[..., :k], a_values[..., k:], jnp.zeros(a_items.shape))
  return jnp.sort(jnp.where(a_mask[..., None], values, jnp.inf), axis=1)


def _left_out_swap(weak: WeakSignals, users: jax.Array, out: jax.Array):
  """For each row, its left-out purchase's entry in the user's A_u table (`out` [B, Ca] marks it; none
  where the purchase is outside A_u): (present [B], the entry's statistics in the table [B, R], the same
  with the purchase removed [B, R])."""
  a_items, _, a_values = known_items(weak, users)
  item = jnp.sum(out * a_items, axis=1).astype(jnp.int32)[:, None]
  values = jnp.einsum("bc,bck->bk", out, a_values)[:, None, :]
  k = n_aux(weak)
  flags, counts = values[..., :k], values[..., k:]
  whole = _stats(weak, users, item, flags, counts, jnp.zeros(item.shape))[:, 0]
  without = _stats(weak, users, item, flags, counts, jnp.ones(item.shape))[:, 0]
  return jnp.sum(out, axis=1), whole, without


def _ranks(sorted_values: jax.Array, count: jax.Array, values: jax.Array, own: jax.Array,
           known: jax.Array, tie: jax.Array, swap=None) -> jax.Array:
  """Share of the user's other A_u items above each value (ties half), by binary search.

  sorted_values [B, Ca, R], count [B]; values [B, n, R]: the pairs' own statistics; own [B, n, R]: the
  same items' entries in the table as this row holds them (which differ from `values` under
  leave-one-out), left out where `known`; tie [R]: values closer than this are ties; swap: (present [B],
  whole [B, R], without [B, R]) of `_left_out_swap`, one entry of each row whose value in this row is
  `without` where the sorted table holds `whole`. Returns [B, n, R]."""

  def search(offset, side):
    one = functools.partial(jnp.searchsorted, side=side)
    return jax.vmap(jax.vmap(one, in_axes=(1, 1), out_axes=1))(sorted_values, values + offset)

  below_or_tie, below = search(tie, "right"), search(-tie, "left")
  count = count[:, None, None].astype(jnp.float32)
  above = count - below_or_tie + 0.5 * (below_or_tie - below)
  if swap is not None:  # the same count as a search over the table with that entry replaced
    above = above + _swap_change(values, tie, swap)
  known = known[..., None]
  self_part = known * ((own > values + tie) + 0.5 * (jnp.abs(own - values) <= tie))
  return (above - self_part) / jnp.maximum(count - known, 1.0)


def _swap_change(values: jax.Array, tie: jax.Array, swap) -> jax.Array:
  """[B, n, R]: how many more of the user's other items are above each of `values` (ties half) once each
  row's left-out entry holds its `without` statistics instead of its `whole` ones (`_left_out_swap`)."""
  present, whole, without = (x[:, None] for x in swap)
  hi, lo = values + tie, values - tie
  score = lambda a: (a > hi) + 0.5 * ((a <= hi) & (a >= lo))  # noqa: E731
  return present[..., None] * (score(without) - score(whole))


def _ties(k: int) -> jax.Array:
  """[R]: how close two ranked statistics must be to rank as a tie: purchase and cross-behavior counts are
  whole numbers and compare exactly, shares within TIE of each other are ties (so that the rounding of one
  compiled program or another cannot turn a tie into a rank step)."""
  return jnp.asarray([0.0] + [TIE] * k + [0.0] * (k + 1))


def _n_known(weak: WeakSignals, users: jax.Array) -> jax.Array:
  """[B]: |A_u| of each user (weak-signal candidates and converting pairs), which the ranks divide by."""
  return jnp.sum(weak.cand_mask[users], axis=1) + jnp.sum(weak.conv_table_mask[users], axis=1)


def _user_share(weak: WeakSignals, users: jax.Array, out: jax.Array) -> jax.Array:
  """[B]: the user's smoothed conversion share, without each row's left-out purchase (`out`)."""
  u_conv = weak.user_conv[users]
  converted = u_conv[:, 0] - jnp.sum(out, axis=1)
  return (converted + SMOOTHING * weak.conv_prior[-1]) / (u_conv[:, 1] + SMOOTHING)


def _columns(k: int) -> tuple[int, slice]:
  """Where `features` puts the user's conversion share and the ranks, for K-1 = k (the layout of
  `n_features`: the item's 1 + 2k, then whether known, k flags, k + 1 activities, the share, the ranks)."""
  share = (1 + 2 * k) + 1 + k + (k + 1)
  return share, slice(share + 1, share + 1 + n_ranked(k))


def n_aux(weak: WeakSignals) -> int:
  """K-1, the number of auxiliary behaviors."""
  return weak.item_conv.shape[1]


def _cross(weak: WeakSignals, users, items, counts, loo, hidden: jax.Array | None = None) -> jax.Array:
  """The cross-behavior counts [B, n, K], the pair's own purchase removed where `loo` is 1: it adds
  |S_u^k| (u itself as a co-user) to every behavior k, and for the target also the other buyers of i (i
  itself as a shared item), u counted once. A `hidden` auxiliary pair (u, i) of behavior k (with its
  purchase left out) also takes out the paths through i as the k-item u shares: the other users with k on
  i who bought it."""
  own = weak.user_counts[users][:, None, :] + jnp.zeros_like(counts)
  own = own.at[..., -1].add(weak.item_counts[items][..., -1] - 1.0)
  if hidden is not None:
    through = hidden * jnp.maximum(weak.item_conv[items] - 1.0, 0.0)
    own = own.at[..., :-1].add(through)
  return jnp.maximum(counts - loo[..., None] * own, 0.0)


def features(weak: WeakSignals, users: jax.Array, items: jax.Array, known: jax.Array, values: jax.Array,
             loo: jax.Array, left_out: jax.Array | None = None, hidden: jax.Array | None = None) -> jax.Array:
  """x_ui for users [B] and items [B, n]; known: i ∈ A_u [B, n]; values [B, n, (K-1) + K]: the pair values
  of `lookup`; loo [B, n] (1: the pair is a training purchase, removed from the counts); left_out [B]: the
  training purchase (item id) each row of a loss leaves out, removed for every item of the row from what
  they are compared with: the user's converting count, and the purchase's own entry among the user's A_u
  items that the ranks count (None: evaluation, nothing left out); hidden [B, n, K-1]: the user's own
  auxiliary pairs on the item, taken out of the item's counts (a training purchase scored as an item never
  touched, `purchase_scores`; such a pair is not known). Returns [B, n, n_features(K-1)]."""
  known = known.astype(jnp.float32)
  flags, counts = values[..., :n_aux(weak)] * known[..., None], values[..., n_aux(weak):]
  buys, share, aux = _item_values(weak, items, flags, loo, hidden)
  item = [jnp.log1p(buys)[..., None], share, jnp.log1p(aux)]
  cross = _cross(weak, users, items, counts, loo, hidden)
  # outside A_u a training purchase keeps its counts only where, its purchase removed, it would be one of
  # the user's collaborative candidates (as a held-out purchase would be); no other item outside them has any
  cobuy = cross[..., -1]
  as_candidate = (cobuy > 0) & (cobuy >= weak.cf_floor[users][:, None])
  cross = jnp.where(((known == 0) & (loo > 0) & ~as_candidate)[..., None], 0.0, cross)
  # where this item ranks among the user's other known items (ties: `_ties`)
  # (in a loss row the left-out purchase's entry is its left-out statistics, as an evaluation row holds its
  # held-out item without the purchase: kept whole, it would sit above the row's other items on every
  # count, and only training rows would show it)
  out = _left_out_entries(weak, users, left_out)
  if weak.known_sorted is None:
    raise ValueError("the weak-signal tables have no rank tables: build them with "
                     "hnt_jax.models.evidence.with_evidence_tables(weak_signals(...))")
  n_known = _n_known(weak, users)
  own_loo = jnp.zeros(items.shape) if left_out is None else known * (items == left_out[:, None])
  k = n_aux(weak)
  tie = _ties(k)
  swap = None if left_out is None else _left_out_swap(weak, users, out)
  ranks = _ranks(weak.known_sorted[users], n_known, _ranked(buys, share, cross),
                 _stats(weak, users, items, flags, counts, own_loo), known, tie, swap)
  u_counts = weak.user_counts[users]
  # the user's own statistics are the same for every item of a row: in a loss row the left-out purchase's
  # conversion is taken out for all of them, as a held-out purchase is absent from evaluation rows (left out
  # for the purchase only, they would set it apart from the other items of its row; never left out, the
  # rows of training would carry a share that evaluation rows do not have)
  u_share = _user_share(weak, users, out)
  shape = items.shape
  user = [jnp.broadcast_to(jnp.log1p(u_counts[:, None, :-1]), shape + (share.shape[-1],)),
          jnp.broadcast_to(jnp.log1p(n_known.astype(jnp.float32))[:, None, None], shape + (1,)),
          jnp.broadcast_to(u_share[:, None, None], shape + (1,))]
  pair = jnp.concatenate([known[..., None], flags] + user + [ranks], axis=-1) * known[..., None]
  return jnp.concatenate(item + [pair, jnp.log1p(cross)], axis=-1)


class PairScorer(nn.Module):
  """s_θ(x_ui): an MLP over the pair evidence (`layers` hidden ReLU layers of `hidden` units; 0 layers is a
  logistic scorer). With `standardize`, each feature is first shifted and scaled by its mean and standard
  deviation over the users' candidates (`score_pairs` passes them), so that counts on a log scale and
  shares in [0, 1] enter on one scale."""
  hidden: int = 32
  layers: int = 2
  standardize: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mean: jax.Array | None = None, std: jax.Array | None = None) -> jax.Array:
    if self.standardize:
      if mean is None or std is None:
        raise ValueError("a standardizing pair scorer needs the features' moments: call it through "
                         "hnt_jax.models.evidence.score_pairs")
      x = (x - mean) / std
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])  # one row per pair: XLA's CPU gradients of 2-D products are faster
    for k in range(self.layers):
      x = nn.relu(nn.Dense(self.hidden, name=f"hidden_{k}")(x))
    # no output bias: every loss on these scores compares them, so a constant would never learn
    return nn.Dense(1, use_bias=False, name="score")(x)[..., 0].reshape(lead)


def score_pairs(scorer, weak: WeakSignals, x: jax.Array) -> jax.Array:
  """s_θ(x) for features x [..., n_features] of `features` or `candidate_features`: [...]."""
  return scorer(x, weak.feature_mean, weak.feature_std)


def item_scores(scorer, weak: WeakSignals) -> jax.Array:
  """s_θ of every item for a user who never touched it (no pair evidence): [N]."""
  n = weak.item_counts.shape[0]
  items = jnp.arange(n, dtype=jnp.int32)[None, :]
  zeros = jnp.zeros(items.shape)
  width = n_aux(weak) + weak.cand_cross.shape[-1]
  x = features(weak, jnp.zeros((1,), jnp.int32), items, zeros.astype(bool), jnp.zeros(items.shape + (width,)),
               zeros)
  return score_pairs(scorer, weak, x)[0]


def user_pair_scores(scorer, weak: WeakSignals, chunk: int = 256) -> jax.Array:
  """`candidate_scores` of every user, [M, C] (in chunks of users, one after another)."""
  m = weak.cand_items.shape[0]
  n_chunks = -(-m // chunk)
  users = jnp.pad(jnp.arange(m, dtype=jnp.int32), (0, n_chunks * chunk - m)).reshape(n_chunks, chunk)
  scores = jax.lax.map(lambda u: candidate_scores(scorer, weak, u), users)
  return scores.reshape(n_chunks * chunk, -1)[:m]


def candidate_features(weak: WeakSignals, users: jax.Array, left_out: jax.Array | None = None) -> jax.Array:
  """`features` of the `candidates` of a batch of users, [B, C + F, n_features], read from `cand_features`
  (`with_evidence_tables`). `left_out` [B], the rows' purchases, as in `features` for the rows of a loss: a
  candidate is never a training purchase, so all that changes is the user's conversion share and, where the
  purchase is one of the user's A_u items, the ranks, by its entry's change (`_swap_change`)."""
  if weak.cand_features is None:
    raise ValueError("the weak-signal tables have no candidate features: build them with "
                     "hnt_jax.models.evidence.with_evidence_tables(weak_signals(...))")
  x = weak.cand_features[users]
  if left_out is None:
    return x
  k = n_aux(weak)
  out = _left_out_entries(weak, users, left_out)
  known = jnp.concatenate([weak.cand_mask[users], jnp.zeros_like(weak.cf_mask[users])], axis=1)
  known = known.astype(jnp.float32)
  n_known = _n_known(weak, users)
  others = jnp.maximum(n_known[:, None].astype(jnp.float32) - known, 1.0)
  change = _swap_change(weak.cand_stats[users], _ties(k), _left_out_swap(weak, users, out))
  share, ranks = _columns(k)
  x = x.at[..., share].set(_user_share(weak, users, out)[:, None] * known)
  return x.at[..., ranks].add(change * (known / others)[..., None])


def candidate_scores(scorer, weak: WeakSignals, users: jax.Array, left_out: jax.Array | None = None
                     ) -> jax.Array:
  """s_θ of the `candidates` of a batch of users, [B, C + F] (`left_out`: as in `candidate_features`). The
  rest of A_u, the converting pairs, are training purchases, which the losses leave out."""
  return score_pairs(scorer, weak, candidate_features(weak, users, left_out))


def scatter_candidates(weak: WeakSignals, base: jax.Array, pair: jax.Array, users: jax.Array) -> jax.Array:
  """[B, N] scores: `base` with each user's `candidates` set to `pair` [B, C + F]."""
  items, mask, _, _ = candidates(weak, users)
  rows = jnp.arange(users.shape[0])[:, None]
  cols = jnp.where(mask, items, base.shape[1])
  return base.at[rows, cols].set(pair, mode="drop")


def unseen_rows(model, users: jax.Array, share: float) -> jax.Array | None:
  """[B] bool: the rows of a loss whose purchase `purchase_scores` scores as an item its user never
  touched, each with probability `share` from the model's "sample" stream (None for 0, which draws
  nothing, so that the stream is the same as without the setting)."""
  if share <= 0:
    return None
  return jax.random.uniform(model.make_rng("sample"), users.shape) < share


def purchase_scores(scorer, weak: WeakSignals, users: jax.Array, items: jax.Array,
                    unseen: jax.Array | None = None) -> jax.Array:
  """s_θ of training purchases (users [B], items [B]) with their own purchase left out: [B]. Where `unseen`
  [B] is True the purchase is scored as an item its user never touched: the user's auxiliary pairs on it
  taken out of its counts, outside A_u, and its cross-behavior counts only where it would be one of the
  user's collaborative candidates."""
  known, values = lookup(weak, users, items[:, None], purchases=True)
  hidden = None
  if unseen is not None:  # u's own auxiliary pairs on the item leave its counts, and it leaves A_u
    hidden = values[..., :n_aux(weak)] * (known & unseen[:, None])[..., None]
    known = known & ~unseen[:, None]
  x = features(weak, users, items[:, None], known, values, jnp.ones((users.shape[0], 1)), items, hidden)
  return score_pairs(scorer, weak, x)[:, 0]


def softmax_loss(scores: jax.Array, pos_scores: jax.Array, users: jax.Array, pos: jax.Array,
                 target_rows) -> jax.Array:
  """The task that is tested, as a loss: −log softmax of each training purchase over every item, the
  user's other training purchases left out (evaluation masks them).

  scores [B, N]: every item scored as in evaluation; pos_scores [B]: the purchase scored with its own
  purchase left out of the evidence, which replaces its entry."""
  bought = target_rows.dense(users) > 0
  rows = jnp.arange(users.shape[0])
  logits = jnp.where(bought, -jnp.inf, scores).at[rows, pos].set(pos_scores)
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - pos_scores)


def sampled_softmax_loss(exact: jax.Array, exact_mask: jax.Array, pos_scores: jax.Array, sampled: jax.Array,
                         log_q: jax.Array, excluded: jax.Array) -> jax.Array:
  """`softmax_loss` with the partition sum over the items outside `exact` estimated from samples.

  Each row's partition sum is over the items it does not mask: its purchase (pos_scores [B]), the items
  scored exactly (exact [B, C], where exact_mask), and the rest, estimated without bias from S items drawn
  (with replacement) from q, shared by the rows: sum over the rest of exp(s) = E_q[(1/S) sum_j exp(s_j) /
  q_j] over the draws that are among the rest. sampled [B, S]: the draws' scores; log_q [S]: their log
  q; excluded [B, S]: draws that are not among the row's rest (a training purchase of the user, or one of
  its exact items), which count 0. Returns the mean over rows of −log of the purchase's share."""
  s = sampled.shape[1]
  logits = jnp.concatenate([jnp.where(exact_mask, exact, -jnp.inf), pos_scores[:, None],
                            jnp.where(excluded, -jnp.inf, sampled - jnp.log(s) - log_q[None, :])], axis=1)
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - pos_scores)


def contains(items: jax.Array, mask: jax.Array, values: jax.Array) -> jax.Array:
  """[B, S]: whether each of `values` [S], sorted ascending (repeats allowed), is among row b's `items`
  [B, L] where `mask` (items distinct within a row). Each item finds the run of equal values by binary
  search in the one sorted array, and marks it: O(B L log S + B S), no search per row."""
  b, s = items.shape[0], values.shape[0]
  lo = jnp.searchsorted(values, items, side="left")
  hi = jnp.searchsorted(values, items, side="right")
  mark = (mask & (hi > lo)).astype(jnp.int32)
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], items.shape)
  runs = jnp.zeros((b, s + 1), jnp.int32).at[rows, lo].add(mark).at[rows, hi].add(-mark)
  return jnp.cumsum(runs[:, :s], axis=1) > 0


def draw(key: jax.Array, log_q: jax.Array, n: int) -> jax.Array:
  """`n` item ids drawn with replacement from q = softmax(log_q) [N], sorted ascending, by inverting its
  cumulative sum (O(N + n log N); `jax.random.categorical` would draw N Gumbel variates per sample)."""
  cdf = jnp.cumsum(jnp.exp(log_q - jnp.max(log_q)))
  u = jnp.sort(jax.random.uniform(key, (n,), maxval=cdf[-1]))
  return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), log_q.shape[0] - 1).astype(jnp.int32)
