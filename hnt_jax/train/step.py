"""The train state and the one jitted train step."""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from hnt_jax.errors import ConfigError


class TrainState(train_state.TrainState):
  """Flax TrainState (step, params, optimizer state); `apply_fn` is the model's `apply`."""


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")


def learning_rate(train_cfg, steps_per_epoch: int = 1):
  """`train.learning_rate` as the optimizer takes it: a constant, or with `train.lr_schedule=cosine` a
  cosine decay from it to `train.lr_final_fraction` of it over `train.epochs` x `steps_per_epoch` steps
  (then held). The schedule's step count lives in the optimizer state, so a resumed run continues it."""
  lr = float(train_cfg.learning_rate)
  if train_cfg.lr_schedule == "constant":
    return lr
  if train_cfg.lr_schedule == "cosine":
    return optax.cosine_decay_schedule(lr, decay_steps=max(1, int(train_cfg.epochs) * int(steps_per_epoch)),
                                       alpha=float(train_cfg.lr_final_fraction))
  raise ConfigError(f"train.lr_schedule={train_cfg.lr_schedule!r} is not one of {', '.join(SCHEDULES)}")


def make_optimizer(train_cfg, steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """The optimizer of `train.optimizer` at `learning_rate(train_cfg, steps_per_epoch)` (a training run
  passes its steps per epoch; a state built only to restore a checkpoint into can leave it out)."""
  lr = learning_rate(train_cfg, steps_per_epoch)
  if train_cfg.optimizer == "adam":
    return optax.adam(lr)
  if train_cfg.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=float(train_cfg.weight_decay))
  if train_cfg.optimizer == "sgd":
    return optax.sgd(lr)
  raise ConfigError(f"train.optimizer={train_cfg.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")


def all_finite(tree: Any) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


ExtraLoss = Callable[[Any, dict, Any, dict, jax.Array], jax.Array]


def make_train_step(model, state_shardings: Any = None, extra_loss: Optional[ExtraLoss] = None):
  """`train_step(state, model_state, graphs, batch, key) -> (state, metrics)`, jitted once per run.

  `model_state` holds the model's non-parameter collections (read-only during a step). On a device mesh,
  `state_shardings` (the state's layout) keeps the updated state laid out as it came in.

  `extra_loss(model, variables, graphs, batch, key) -> scalar`, when given, is added to the model's loss
  (a user-supplied term; logged as "extra"). It is traced into the same jitted step, so it must be a pure
  JAX function; `model.apply(variables, graphs, method=model.embed)` gives it the model's embeddings.

  A step whose loss or gradients are not finite leaves the state unchanged and reports `finite = False`,
  so the loop can stop with the last good parameters.
  """

  def train_step(state: TrainState, model_state, graphs, batch, key):
    def loss_fn(params):
      variables = {"params": params, **model_state}
      loss, metrics = model.apply(variables, graphs, batch, method=model.loss, rngs={"sample": key})
      if extra_loss is not None:
        extra = extra_loss(model, variables, graphs, batch, jax.random.fold_in(key, 1))
        loss, metrics = loss + extra, dict(metrics, extra=extra)
      return loss, metrics

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads)
    finite = jnp.isfinite(loss) & all_finite(grads) & all_finite(new_state.params)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return new_state, dict(metrics, loss=loss, finite=finite)

  if state_shardings is None:
    return jax.jit(train_step, donate_argnums=(0,))
  return jax.jit(train_step, donate_argnums=(0,), out_shardings=(state_shardings, None))
