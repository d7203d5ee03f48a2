"""Hesitation sets from positive weak signals (docs/method.md section 3).

A conversion model c_θ (a small MLP) learns what auxiliary interactions that lead to the target look like:
converting pairs C are label 1, weak-signal pairs W label 0. Weak-signal pairs that still score high look
like converting ones: those are the user's hesitations. Every `refresh_every` epochs all padded candidates
are scored (`jax.vmap` of a per-user function over chunks of users) and each user's hesitation set H_u keeps
the top-m candidates with σ(c_θ) ≥ τ_h, stored as padded [M, m] items, mask and confidences.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from hnt_jax.graph import UserRows, WeakSignals


class ConversionModel(nn.Module):
  hidden: int = 64

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
    return nn.Dense(1, name="logit")(h)[..., 0]


def pair_features(weak: WeakSignals, users: jax.Array, items: jax.Array, aux_flags: jax.Array,
                  beh_users: jax.Array, beh_items: jax.Array, z_users: jax.Array, z_items: jax.Array
                  ) -> jax.Array:
  """x_ui = [Aux(u,i) ; item and user conversion statistics ; e_u^k ⊙ e_i^k for k < K ; z_u ⊙ z_i].

  users / items: int arrays of one shape S; aux_flags: S + [K-1]; beh_*: [K-1, rows, d]. Returns S + [F].
  """
  users = jnp.broadcast_to(users, items.shape)
  per_behavior = [beh_users[k][users] * beh_items[k][items] for k in range(beh_users.shape[0])]
  return jnp.concatenate([aux_flags, weak.item_stats[items], weak.user_stats[users], *per_behavior,
                          z_users[users] * z_items[items]], axis=-1)


def score_candidates(logit_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array], weak: WeakSignals,
                     chunk: int = 256) -> jax.Array:
  """σ(c_θ) of every padded candidate, [M, C] (0 where padded).

  `logit_fn(user, items [C], aux [C, K-1]) -> [C]` scores one user's candidates; it is vmapped over a chunk
  of users, and chunks run one after another (`lax.map`), so memory is O(chunk x C x F).
  """
  m, c = weak.cand_items.shape
  n_chunks = -(-m // chunk)
  pad = n_chunks * chunk - m
  users = jnp.pad(jnp.arange(m, dtype=jnp.int32), (0, pad)).reshape(n_chunks, chunk)
  per_user = jax.vmap(lambda u: logit_fn(u, weak.cand_items[u], weak.cand_aux[u]))
  logits = jax.lax.map(per_user, users).reshape(n_chunks * chunk, c)[:m]
  return jnp.where(weak.cand_mask, jax.nn.sigmoid(logits), 0.0)


def select_hesitations(probs: jax.Array, weak: WeakSignals, threshold: float, size: int
                       ) -> dict[str, jax.Array]:
  """H_u: the top-`size` candidates with probability ≥ threshold ({"items", "mask", "conf"}: [M, size])."""
  eligible = weak.cand_mask & (probs >= threshold)
  conf, pos = _top(jnp.where(eligible, probs, -1.0), size)
  items = jnp.take_along_axis(weak.cand_items, pos, axis=1)
  mask = conf >= 0
  return {"items": jnp.where(mask, items, 0), "mask": mask, "conf": jnp.where(mask, conf, 0.0)}


def _top(keyed: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
  """top_k along the last axis, padded with (-1, 0) when there are fewer than `size` columns."""
  k = min(size, keyed.shape[-1])
  val, pos = jax.lax.top_k(keyed, k)
  pad = [(0, 0)] * (keyed.ndim - 1) + [(0, size - k)]
  return jnp.pad(val, pad, constant_values=-1.0), jnp.pad(pos, pad)


def random_choice(key: jax.Array, weak: WeakSignals, size: int) -> dict[str, jax.Array]:
  """`size` weak-signal candidates per user chosen uniformly at random (the baseline for precision)."""
  keys = jnp.where(weak.cand_mask, jax.random.uniform(key, weak.cand_mask.shape), -1.0)
  val, pos = _top(keys, size)
  mask = val >= 0
  return {"items": jnp.where(mask, jnp.take_along_axis(weak.cand_items, pos, axis=1), 0), "mask": mask}


def set_precision(chosen: dict[str, jax.Array], truth: UserRows, users: jax.Array) -> jax.Array:
  """Share of the chosen items (over `users`) that are one of the user's held-out items."""
  items, mask = chosen["items"][users], chosen["mask"][users]
  truth_items, truth_mask = truth.padded(users)
  hit = jnp.any((items[:, :, None] == truth_items[:, None, :]) & truth_mask[:, None, :], axis=-1) & mask
  return hit.sum() / jnp.maximum(mask.sum(), 1)


def sample_from_sets(key: jax.Array, hes: dict[str, jax.Array], users: jax.Array
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One hesitation item per batch user, uniform over its set: (items, confidences, valid)."""
  mask = hes["mask"][users]
  keys = jnp.where(mask, jax.random.uniform(key, mask.shape), -1.0)
  pos = jnp.argmax(keys, axis=1)
  take = lambda a: jnp.take_along_axis(a[users], pos[:, None], axis=1)[:, 0]
  return take(hes["items"]), take(hes["conf"]), jnp.any(mask, axis=1)


def hesitation_loss(y_hes: jax.Array, y_pos: jax.Array, y_neg: jax.Array, conf: jax.Array, valid: jax.Array,
                    beta: float) -> jax.Array:
  """L_hes = −h_uh log σ(ŷ_uh − ŷ_uj) − β log σ(ŷ_ui⁺ − ŷ_uh), averaged over users with a hesitation set."""
  per = -conf * jax.nn.log_sigmoid(y_hes - y_neg)
  if beta:
    per = per - beta * jax.nn.log_sigmoid(y_pos - y_hes)
  return jnp.sum(jnp.where(valid, per, 0.0)) / jnp.maximum(valid.sum(), 1)
