"""Model registry: `get_model(config.model, graphs)` builds the module named by `config.model.name`."""
from __future__ import annotations

from typing import Callable

from hnt_jax.data.errors import ConfigError
from hnt_jax.models.base import Embeddings, Recommender, bpr_loss, l2_batch
from hnt_jax.models.heuristic import Heuristic
from hnt_jax.models.lightgcn import LightGCN
from hnt_jax.models.mf import MF


def _embedding_kwargs(cfg) -> dict:
  return dict(embed_dim=cfg.embed_dim, init_std=cfg.init_std, l2=cfg.l2)


def _heuristic(cfg, n_users, n_items):
  weights = tuple(float(w) for w in str(cfg.heuristic_weights).split(",") if w.strip())
  return Heuristic(n_users=n_users, n_items=n_items, weights=weights, popularity=cfg.heuristic_popularity)


REGISTRY: dict[str, Callable[..., Recommender]] = {
    "mf": lambda cfg, m, n: MF(n_users=m, n_items=n, **_embedding_kwargs(cfg)),
    "lightgcn": lambda cfg, m, n: LightGCN(n_users=m, n_items=n, n_layers=cfg.n_layers, graph="target",
                                           **_embedding_kwargs(cfg)),
    "lightgcn_g": lambda cfg, m, n: LightGCN(n_users=m, n_items=n, n_layers=cfg.n_layers, graph="merged",
                                             **_embedding_kwargs(cfg)),
    "heuristic": _heuristic,
}


def get_model(model_cfg, n_users: int, n_items: int) -> Recommender:
  name = model_cfg.name
  if name not in REGISTRY:
    raise ConfigError(f"model.name={name!r} is not one of {', '.join(sorted(REGISTRY))}")
  return REGISTRY[name](model_cfg, n_users, n_items)


__all__ = ["Embeddings", "Recommender", "REGISTRY", "get_model", "bpr_loss", "l2_batch", "Heuristic",
           "LightGCN", "MF"]
