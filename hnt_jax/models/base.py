"""The one interface every model implements, and the losses they share.

A model is a Flax linen module with three methods, called through `model.apply(params, ..., method=...)`:

* `embed(graphs)`: whatever the model computes once per evaluation from its parameters and the graphs
  (for embedding models, `Embeddings(users, items)` after propagation);
* `score(graphs, emb, users)`: [B, N] scores of every item for a batch of users;
* `loss(graphs, batch)`: (scalar loss, dict of scalar metrics) for a batch of (user, pos, neg) triples.

`init` runs `loss` so that every parameter is created. Models without parameters (the heuristic) set
`trainable = False`; the training loop then only evaluates them.
"""
from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

Batch = dict[str, jax.Array]  # users, pos, neg: [B] int32


@flax.struct.dataclass
class Embeddings:
  users: jax.Array  # [M, d]
  items: jax.Array  # [N, d]


class Recommender(nn.Module):
  """Base class: dot-product scoring over `embed`'s output.

  Models with state besides parameters keep it in Flax variable collections other than "params" (HNT's
  "hesitation" sets); the loop checkpoints them and calls `refresh` (mutable) every `refresh_every` epochs.
  """
  n_users: int
  n_items: int
  trainable: ClassVar[bool] = True

  @property
  def refresh_every(self) -> int:
    return 0

  def refresh(self, graphs) -> None:
    """Recomputes non-parameter state from the current parameters."""

  def graph_extras(self, ds) -> dict:
    """Model-specific tables to add to the `Graphs` (field name -> value), built once from the dataset."""
    return {}

  def diagnostics(self, graphs, truth, users) -> dict[str, jax.Array]:
    """Scalars logged with every evaluation; `truth` holds the split's held-out items (UserRows)."""
    return {}

  def embed(self, graphs) -> Any:
    raise NotImplementedError

  def score(self, graphs, emb: Embeddings, users: jax.Array) -> jax.Array:
    return emb.users[users] @ emb.items.T

  def loss(self, graphs, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    raise NotImplementedError


def normal_init(std: float):
  """N(0, std²) initializer whose values are the same whether `init` runs jitted or op by op (the draw is
  kept apart from the scaling, which XLA would otherwise fold into the draw's own constants)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.lax.optimization_barrier(jax.random.normal(key, shape, dtype)) * jnp.asarray(std, dtype)
  return init


class EmbeddingRecommender(Recommender):
  """A recommender with ID embedding tables E⁰ ("users" [M, d], "items" [N, d]) and the BPR + L2 objective on
  the target; subclasses define `embed` (MF returns the tables, graph models propagate them)."""
  embed_dim: int = 64
  init_std: float = 0.1
  l2: float = 1e-4

  def setup(self):
    init = normal_init(self.init_std)
    self.user_table = self.param("users", init, (self.n_users, self.embed_dim))
    self.item_table = self.param("items", init, (self.n_items, self.embed_dim))

  def ego(self) -> jax.Array:
    """E⁰ of all nodes, users first: [M + N, d]."""
    return jnp.concatenate([self.user_table, self.item_table], axis=0)

  def loss(self, graphs, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    bpr = bpr_loss(self.embed(graphs), batch)
    reg = l2_batch(self.user_table, self.item_table, batch)
    return bpr + self.l2 * reg, {"bpr": bpr, "l2": reg}


def bpr_loss(emb: Embeddings, batch: Batch) -> jax.Array:
  """Mean of -log σ(ŷ_ui⁺ − ŷ_uj⁻)."""
  u = emb.users[batch["users"]]
  diff = jnp.sum(u * (emb.items[batch["pos"]] - emb.items[batch["neg"]]), axis=-1)
  return -jnp.mean(jax.nn.log_sigmoid(diff))


def l2_batch(user_table: jax.Array, item_table: jax.Array, batch: Batch) -> jax.Array:
  """‖E⁰_batch‖² / B over the batch's users, positives and negatives (the ego embeddings)."""
  b = batch["users"].shape[0]
  total = (jnp.sum(user_table[batch["users"]] ** 2) + jnp.sum(item_table[batch["pos"]] ** 2)
           + jnp.sum(item_table[batch["neg"]] ** 2))
  return total / b


def behavior_bpr(key: jax.Array, graph, user_emb: jax.Array, item_emb: jax.Array, batch_size: int,
                 n_items: int) -> jax.Array:
  """BPR on one behavior's own edges: `batch_size` random edges of `graph` (a BehaviorGraph), each against
  a uniform item outside the user's items of that behavior (exact), scored with (user_emb, item_emb)."""
  from hnt_jax.graph import sample_negatives
  key_e, key_n = jax.random.split(key)
  edge = jax.random.randint(key_e, (batch_size,), 0, graph.users.shape[0])
  u, i = graph.users[edge], graph.items[edge]
  j = sample_negatives(key_n, graph.rows, u, n_items)
  diff = jnp.sum(user_emb[u] * (item_emb[i] - item_emb[j]), axis=-1)
  return -jnp.mean(jax.nn.log_sigmoid(diff))
