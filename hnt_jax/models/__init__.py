"""Model registry: `get_model(config.model, graphs)` builds the module named by `config.model.name`."""
from __future__ import annotations

from typing import Callable

from hnt_jax.data.errors import ConfigError
from hnt_jax.models.base import Embeddings, Recommender, bpr_loss, l2_batch
from hnt_jax.models.cascade import CRGCN, MBCGCN
from hnt_jax.models.heuristic import Heuristic
from hnt_jax.models.hnt import HNT
from hnt_jax.models.lightgcn import LightGCN
from hnt_jax.models.mf import MF


def _embedding_kwargs(cfg) -> dict:
  return dict(embed_dim=cfg.embed_dim, init_std=cfg.init_std, l2=cfg.l2)


def _heuristic(cfg, n_users, n_items):
  weights = tuple(float(w) for w in str(cfg.heuristic_weights).split(",") if w.strip())
  return Heuristic(n_users=n_users, n_items=n_items, weights=weights, popularity=cfg.heuristic_popularity)


def _hnt(cfg, n_users, n_items, n_behaviors):
  h = cfg.hesitation
  return HNT(n_users=n_users, n_items=n_items, n_behaviors=n_behaviors, n_layers=cfg.n_layers,
             encoder=cfg.encoder, residual=cfg.residual, use_negative_transfer=cfg.use_negative_transfer,
             use_hesitation=cfg.use_hesitation, use_sim_loss=cfg.use_sim_loss, sim_dim=cfg.sim_dim,
             gate_temperature=cfg.gate_temperature, sim_temperature=cfg.sim_temperature,
             lambda_aux=cfg.lambda_aux, lambda_hes=cfg.lambda_hes, lambda_conv=cfg.lambda_conv,
             lambda_sim=cfg.lambda_sim, conv_hidden=cfg.conv_hidden, conv_batch=cfg.conv_batch,
             conv_stop_gradient=cfg.conv_stop_gradient,
             conv_embeddings=cfg.conv_embeddings, hes_refresh_every=h.refresh_every,
             hes_threshold=h.threshold, hes_size=h.size, hes_beta=h.beta, score_fusion=h.score_fusion,
             fusion_pairs=h.fusion_pairs, fusion_value=h.fusion_value,
             gate_edge_budget=cfg.gate_edge_budget,
             **_embedding_kwargs(cfg))


REGISTRY: dict[str, Callable[..., Recommender]] = {
    "mf": lambda cfg, m, n, k: MF(n_users=m, n_items=n, **_embedding_kwargs(cfg)),
    "lightgcn": lambda cfg, m, n, k: LightGCN(n_users=m, n_items=n, n_layers=cfg.n_layers, graph="target",
                                              **_embedding_kwargs(cfg)),
    "lightgcn_g": lambda cfg, m, n, k: LightGCN(n_users=m, n_items=n, n_layers=cfg.n_layers,
                                                graph="merged", **_embedding_kwargs(cfg)),
    "heuristic": lambda cfg, m, n, k: _heuristic(cfg, m, n),
    "crgcn": lambda cfg, m, n, k: CRGCN(n_users=m, n_items=n, n_layers=cfg.crgcn_layers,
                                        multitask_weight=cfg.multitask_weight, **_embedding_kwargs(cfg)),
    "mbcgcn": lambda cfg, m, n, k: MBCGCN(n_users=m, n_items=n, n_layers=cfg.n_layers, n_behaviors=k,
                                          **_embedding_kwargs(cfg)),
    "hnt": _hnt,
}


def get_model(model_cfg, n_users: int, n_items: int, n_behaviors: int = 1) -> Recommender:
  """The model `model_cfg.name` for a dataset of `n_behaviors` behaviors (target included)."""
  name = model_cfg.name
  if name not in REGISTRY:
    raise ConfigError(f"model.name={name!r} is not one of {', '.join(sorted(REGISTRY))}")
  return REGISTRY[name](model_cfg, n_users, n_items, n_behaviors)


__all__ = ["Embeddings", "Recommender", "REGISTRY", "get_model", "bpr_loss", "l2_batch", "Heuristic",
           "HNT", "LightGCN", "MF", "CRGCN", "MBCGCN"]
