"""Model registry: `get_model(config.model, n_users, n_items, n_behaviors)` builds the module named by
`config.model.name`.

A model's settings are its module's fields, and their defaults are the fields' defaults: `config.model`
holds the settings every embedding model shares (`SHARED`), and a model with settings of its own has a
block named after it (`config.model.hnt`, `config.model.crgcn`, `config.model.heuristic`), built by
`config_blocks()` from the fields. The module receives the shared settings it has and its block, as
keyword arguments, so a module built by hand with its defaults is the model the command line trains.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from hnt_jax.errors import ConfigError
from hnt_jax.models.base import Embeddings, Recommender, bpr_loss, l2_batch
from hnt_jax.models.cascade import CRGCN, MBCGCN
from hnt_jax.models.heuristic import Heuristic
from hnt_jax.models.hnt import HNT
from hnt_jax.models.lightgcn import LightGCN
from hnt_jax.models.mf import MF
from hnt_jax.models.pair_ranker import PairRanker

# name -> (module, its config block or None, fixed keyword arguments)
REGISTRY: dict[str, tuple[type, str | None, dict[str, Any]]] = {
    "mf": (MF, None, {}),
    "lightgcn": (LightGCN, None, {"graph": "target"}),
    "lightgcn_g": (LightGCN, None, {"graph": "merged"}),
    "heuristic": (Heuristic, "heuristic", {}),
    "crgcn": (CRGCN, "crgcn", {}),
    "mbcgcn": (MBCGCN, None, {}),
    "hnt": (HNT, "hnt", {}),
    "pair_ranker": (PairRanker, "pair_ranker", {}),
}
SHARED = ("embed_dim", "n_layers", "init_std", "l2")  # config.model.<key>, for every module that has it
_DATA = ("n_users", "n_items", "n_behaviors", "parent", "name")  # set from the dataset, not the config


def _fields(cls: type) -> dict[str, Any]:
  return {f.name: f.default for f in dataclasses.fields(cls) if f.name not in _DATA and f.init}


def config_blocks() -> dict[str, dict[str, Any]]:
  """block name -> {setting: default}: every setting of a model with a block, from the module's fields,
  less the shared ones (except those the module lists in `block_settings`: CRGCN's one layer per block)."""
  blocks = {}
  for cls, block, fixed in REGISTRY.values():
    if block is not None:
      own = getattr(cls, "block_settings", ())
      blocks[block] = {k: v for k, v in _fields(cls).items()
                       if k not in fixed and (k not in SHARED or k in own)}
  return blocks


def get_model(model_cfg, n_users: int, n_items: int, n_behaviors: int = 1) -> Recommender:
  """The model `model_cfg.name` for a dataset of `n_behaviors` behaviors (target included)."""
  name = model_cfg.name
  if name not in REGISTRY:
    raise ConfigError(f"model.name={name!r} is not one of {', '.join(sorted(REGISTRY))}")
  cls, block, fixed = REGISTRY[name]
  fields = _fields(cls)
  kwargs = {k: model_cfg[k] for k in SHARED if k in fields}  # then the block, which may override them
  if block is not None:
    kwargs.update(dict(model_cfg[block]))
  kwargs.update(fixed)
  if "n_behaviors" in {f.name for f in dataclasses.fields(cls)}:
    kwargs["n_behaviors"] = n_behaviors
  return cls(n_users=n_users, n_items=n_items, **kwargs)


__all__ = ["Embeddings", "Recommender", "REGISTRY", "get_model", "config_blocks", "bpr_loss", "l2_batch",
           "Heuristic", "HNT", "PairRanker", "LightGCN", "MF", "CRGCN", "MBCGCN"]
