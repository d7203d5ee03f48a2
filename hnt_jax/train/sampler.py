"""BPR triples for a whole epoch in one device call: (user, positive, negative).

Positives are the training target pairs in a fresh permutation each epoch (the last batch wraps around, so
every batch has the same static shape). Negatives are uniform over items outside the user's training
target items, exactly: colliding draws are redrawn until none collides. All randomness comes from the key.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from hnt_jax.graph import BehaviorGraph, UserRows, sample_negatives


@flax.struct.dataclass
class EpochSampler:
  users: jax.Array  # [P] users of the training target pairs
  items: jax.Array  # [P]
  rows: UserRows  # the training target, for exact negatives
  n_items: int = flax.struct.field(pytree_node=False)
  batch_size: int = flax.struct.field(pytree_node=False)

  @property
  def steps(self) -> int:
    return -(-int(self.users.shape[0]) // self.batch_size)

  def epoch(self, key: jax.Array) -> dict[str, jax.Array]:
    """{"users", "pos", "neg"}: each [steps, batch_size] int32."""
    k_perm, k_neg = jax.random.split(key)
    n = self.users.shape[0]
    order = jax.random.permutation(k_perm, n)
    idx = order[jnp.arange(self.steps * self.batch_size) % n]
    users, pos = self.users[idx], self.items[idx]
    neg = sample_negatives(k_neg, self.rows, users, self.n_items)
    shape = (self.steps, self.batch_size)
    return {"users": users.reshape(shape), "pos": pos.reshape(shape), "neg": neg.reshape(shape)}


def make_sampler(target: BehaviorGraph, n_items: int, batch_size: int) -> EpochSampler:
  return EpochSampler(users=target.users, items=target.items, rows=target.rows, n_items=n_items,
                      batch_size=int(batch_size))


sample_epoch = jax.jit(lambda sampler, key: sampler.epoch(key))
