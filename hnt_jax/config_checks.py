"""`validate(config)`: every setting checked before any data is read, each bad one named in one line.

Training, `--mode stats`, benchmarks, recommendations and the experiment runner call it first, so a value
that makes no sense (a negative learning rate, zero epochs, an empty `eval.ks`, a zero temperature) stops
the command before a dataset loads, a workdir is written or a step is compiled. Checks that need the data
(enough items to sample `eval.n_negatives` from) are made when the data has loaded, still before training.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

from hnt_jax.errors import ConfigError

MAX_ID = 2 ** 31 - 1  # user and item totals must fit the int32 indices of the sparse graphs

Rule = Callable[[Any], Optional[str]]  # what is wrong with a value, or None


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_least(low, high=None) -> Rule:
  def rule(v):
    if not _number(v) or not math.isfinite(v) or v < low or (high is not None and v > high):
      return f"must be a number from {low} to {high}" if high is not None else f"must be at least {low}"
    return None
  return rule


def above(low) -> Rule:
  def rule(v):
    if not _number(v) or not math.isfinite(v) or not v > low:
      return f"must be a finite number above {low}"
    return None
  return rule


def one_of(*choices) -> Rule:
  def rule(v):
    return None if v in choices else f"is not one of {', '.join(map(str, choices))}"
  return rule


def _float_list(v) -> Optional[str]:
  try:
    values = [float(x) for x in str(v).split(",") if x.strip()]
  except ValueError:
    return "must be a comma-separated list of numbers (or empty)"
  return None if all(math.isfinite(x) for x in values) else "must hold finite numbers"


def _ks(v) -> Optional[str]:
  from hnt_jax.evaluate import parse_ks
  try:
    parse_ks(v)
  except ValueError:
    return "must be a comma-separated list of positive integers, e.g. 10,20,50"
  return None


def _mesh_size(v) -> Optional[str]:
  return None if isinstance(v, int) and (v == -1 or v >= 1) else "must be at least 1, or -1 for all devices"


def rules() -> dict[str, Rule]:
  """config key -> its rule. Choices come from the modules that own them."""
  from hnt_jax.data.load import FORMATS, HOLDOUT_BEHAVIORS, SPLITS
  from hnt_jax.evaluate import PROTOCOLS
  from hnt_jax.graph import DTYPES, PROPAGATION
  from hnt_jax.models import REGISTRY
  from hnt_jax.models.hnt import model as hnt
  from hnt_jax.models.hnt.encoder import MODES as ENCODERS
  from hnt_jax.train.step import OPTIMIZERS, SCHEDULES
  share = at_least(0.0, 1.0)
  return {
      "seed": at_least(0),
      "data.format": one_of(*FORMATS), "data.split": one_of(*SPLITS),
      "data.holdout_behaviors": one_of(*HOLDOUT_BEHAVIORS),
      "data.holdout_seed": at_least(0), "data.n_users": at_least(0, MAX_ID), "data.n_items": at_least(0, MAX_ID), "data.id_base": at_least(0),
      "data.synthetic.n_users": at_least(2, MAX_ID), "data.synthetic.n_items": at_least(2, MAX_ID),
      "data.synthetic.dim": at_least(1), "data.synthetic.purchases_per_user": above(0),
      "data.synthetic.hesitations_per_user": at_least(0), "data.synthetic.noise_rate": at_least(0),
      "data.synthetic.cart_purchase_rate": share, "data.synthetic.cart_hesitation_rate": share,
      "data.synthetic.heldout_hesitation_prob": share, "data.synthetic.popularity": at_least(0),
      "data.synthetic.temperature": above(0), "data.synthetic.seed": at_least(0),
      "model.name": one_of(*sorted(REGISTRY)), "model.embed_dim": at_least(1), "model.n_layers": at_least(0),
      "model.init_std": above(0), "model.l2": at_least(0),
      "model.heuristic.weights": _float_list, "model.heuristic.popularity": at_least(0),
      "model.crgcn.n_layers": at_least(1), "model.crgcn.multitask_weight": at_least(0),
      "model.hnt.encoder": one_of(*ENCODERS), "model.hnt.sim_dim": at_least(1),
      "model.hnt.gate_temperature": above(0), "model.hnt.sim_temperature": above(0),
      "model.hnt.sim_batch": at_least(0),
      "model.hnt.lambda_aux": at_least(0), "model.hnt.lambda_hes": at_least(0),
      "model.hnt.lambda_conv": at_least(0), "model.hnt.lambda_sim": at_least(0),
      "model.hnt.conv_hidden": at_least(1), "model.hnt.conv_batch": at_least(1),
      "model.hnt.conv_embeddings": one_of(*hnt.CONV_EMBEDDINGS), "model.hnt.gate_edge_budget": share,
      "model.hnt.unseen_purchases": share,
      "model.hnt.hes_refresh_every": at_least(1), "model.hnt.hes_threshold": share,
      "model.hnt.hes_size": at_least(1), "model.hnt.hes_max_candidates": at_least(1),
      "model.hnt.cf_candidates": at_least(0), "model.hnt.softmax_samples": at_least(0),
      "model.hnt.hes_beta": at_least(0), "model.hnt.scorer_hidden": at_least(1),
      "model.hnt.scorer_layers": at_least(0), "model.hnt.cf_temperature": above(0),
      "model.pair_ranker.hidden": at_least(1), "model.pair_ranker.layers": at_least(0),
      "model.pair_ranker.max_candidates": at_least(1), "model.pair_ranker.cf_candidates": at_least(0),
      "model.pair_ranker.unseen_purchases": share,
      "train.epochs": at_least(1), "train.batch_size": at_least(1), "train.optimizer": one_of(*OPTIMIZERS),
      "train.lr_schedule": one_of(*SCHEDULES), "train.lr_final_fraction": share,
      "train.learning_rate": above(0), "train.weight_decay": at_least(0), "train.eval_every": at_least(1),
      "train.patience": at_least(0), "train.checkpoint_every": at_least(1),
      "train.time_limit_minutes": at_least(0), "train.propagation": one_of(*PROPAGATION),
      "train.propagation_dtype": one_of(*DTYPES),
      "eval.protocol": one_of(*PROTOCOLS), "eval.ks": _ks, "eval.chunk_cells": at_least(0),
      "eval.n_negatives": at_least(1), "eval.sample_seed": at_least(0),
      "mesh.data": _mesh_size, "mesh.model": at_least(1), "mesh.distributed": one_of("auto", "on", "off"),
      "experiments.published_epochs": at_least(1),
  }


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      return _ABSENT
    node = node[part]
  return node


_ABSENT = object()


def validate(config) -> None:
  """Raises a ConfigError naming the first bad setting (`--config.key=value: what is wrong`)."""
  from hnt_jax.data.load import parse_behaviors
  _check_known_keys(config)
  for key, rule in rules().items():
    value = _get(config, key)
    if value is _ABSENT:
      continue
    problem = rule(value)
    if problem:
      raise ConfigError(f"--config.{key}={value!r} {problem}")
  behaviors = parse_behaviors(config.data)
  select_metric(config)
  _check_heuristic_weights(config, len(behaviors) - 1)
  if config.model.name == "pair_ranker" and len(behaviors) < 2:
    raise ConfigError(f"--config.model.name=pair_ranker needs at least one auxiliary behavior; "
                      f"data.behaviors={','.join(behaviors)!r} has only the target")


def _check_heuristic_weights(config, n_aux: int) -> None:
  from hnt_jax.models.heuristic import parse_weights
  weights = parse_weights(config.model.heuristic.weights)
  if weights and len(weights) != n_aux:
    raise ConfigError(f"--config.model.heuristic.weights={config.model.heuristic.weights!r} gives "
                      f"{len(weights)} weights for the {n_aux} auxiliary behaviors of data.behaviors="
                      f"{config.data.behaviors!r}")


def _check_known_keys(config) -> None:
  """Every key must be one of the schema's (`base_config()`); only `data.files` is the dataset's own."""
  import difflib

  from hnt_jax.config import base_config, flatten
  known = set(flatten(base_config().to_dict()))
  for key in sorted(flatten(config.to_dict())):
    if key not in known and not key.startswith("data.files."):
      close = difflib.get_close_matches(key, known, n=1)
      raise ConfigError(f"config key {key!r} does not exist" + (f"; did you mean {close[0]!r}?" if close else ""))


def select_metric(config) -> str:
  """`train.select_metric`, which must be hr@K, ndcg@K or recall@K with K in `eval.ks`."""
  from hnt_jax.evaluate import parse_ks
  metric = config.train.select_metric
  name, _, k = metric.partition("@")
  if name not in ("hr", "ndcg", "recall") or not k.isdigit() or int(k) not in parse_ks(config.eval.ks):
    raise ConfigError(f"train.select_metric={metric!r} must be hr@K, ndcg@K or recall@K with K in "
                      f"eval.ks={config.eval.ks!r}")
  return metric
