"""hnt_jax: HNT multi-behavior recommendation (user hesitation and negative transfer) in JAX/Flax.

The public API (docs/api.md) is importable from here; names resolve on first use, so `import hnt_jax` stays
cheap. Everything these functions return is a pytree, a JAX array or a NumPy array.
"""

__version__ = "0.1.0"

_API = {
    # configuration
    "base_config": "hnt_jax.config",
    "load_config": ("hnt_jax.config", "load_config_file"),
    "validate_config": ("hnt_jax.config_checks", "validate"),
    # data
    "Dataset": "hnt_jax.data.dataset",
    "load_dataset": "hnt_jax.data.load",
    "synthetic_dataset": ("hnt_jax.data.synthetic", "generate"),
    "DataError": "hnt_jax.errors",
    "ConfigError": "hnt_jax.errors",
    "WorkdirError": "hnt_jax.errors",
    # graphs
    "Graphs": "hnt_jax.graph",
    "BehaviorGraph": "hnt_jax.graph",
    "UserRows": "hnt_jax.graph",
    "build_graphs": "hnt_jax.graph",
    "weak_signals": "hnt_jax.signals",
    "WeakSignals": "hnt_jax.signals",
    "propagate": "hnt_jax.graph",
    "edge_influence": "hnt_jax.influence",
    "adjacency_edge_index": "hnt_jax.influence",
    # models
    "get_model": "hnt_jax.models",
    "Recommender": "hnt_jax.models",
    "Embeddings": "hnt_jax.models",
    "HNT": "hnt_jax.models",
    "LightGCN": "hnt_jax.models",
    "MF": "hnt_jax.models",
    "CRGCN": "hnt_jax.models",
    "MBCGCN": "hnt_jax.models",
    "Heuristic": "hnt_jax.models",
    "PairRanker": "hnt_jax.models",
    # loss terms (pure functions)
    "bpr_loss": "hnt_jax.models.base",
    "behavior_bpr": "hnt_jax.models.base",
    "l2_batch": "hnt_jax.models.base",
    "info_nce": "hnt_jax.models.hnt.transfer",
    "edge_gates": "hnt_jax.sparse_ops",
    "gated_mean": "hnt_jax.sparse_ops",
    "hesitation_loss": "hnt_jax.models.hnt.hesitation",
    "sample_negatives": "hnt_jax.graph",
    # evaluation
    "Evaluator": "hnt_jax.evaluate",
    "rank_metrics": "hnt_jax.evaluate",
    # training
    "Run": "hnt_jax.train.setup",
    "train_and_evaluate": "hnt_jax.train.loop",
    "load_trained_params": "hnt_jax.train.loop",
    "TrainState": "hnt_jax.train.step",
    "make_train_step": "hnt_jax.train.step",
    "make_optimizer": "hnt_jax.train.step",
}

__all__ = sorted(_API)


def __getattr__(name):
  import importlib
  if name not in _API:
    raise AttributeError(f"module 'hnt_jax' has no attribute {name!r}")
  target = _API[name]
  module, attr = target if isinstance(target, tuple) else (target, name)
  value = getattr(importlib.import_module(module), attr)
  globals()[name] = value
  return value


def __dir__():
  return sorted(list(globals()) + __all__)
