"""The configuration schema of hnt_jax: every key a run may set, with its default.

`configs/*.py` start from `base_config()` and override what differs; command-line overrides
(`--config.model.embed_dim=128`) may only touch keys that exist here.
"""
import copy
import difflib
import importlib.util
import os
from typing import Any, Sequence

import ml_collections

from hnt_jax.errors import ConfigError


def base_config() -> ml_collections.ConfigDict:
  """Every configurable key with its default value."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  # --- data ---------------------------------------------------------------
  data = config.data = ml_collections.ConfigDict()
  data.name = "synthetic"
  data.format = "synthetic"  # pairs | adjacency | pickled_csr | synthetic
  data.dir = ""  # root of the dataset folders; empty: the HNT_DATA_DIR environment variable
  data.subdir = ""  # folder of this dataset under data.dir
  data.behaviors = "view,cart,buy"  # cascade order, target last; drop one with e.g. "cart,buy"
  data.target = "buy"
  # behavior -> file name, for every behavior the dataset ships (data.behaviors picks which are read)
  data.files = ml_collections.ConfigDict()
  data.valid_file = ""  # empty: no validation file (holdout_valid then carves one from the training target)
  data.test_file = "test.txt"
  data.count_file = ""  # JSON {"user": M, "item": N} (CRGCN layout); empty: use n_users / n_items
  data.n_users = 0  # declared totals; 0: take them from count_file, the matrices, or the largest id
  data.n_items = 0
  data.id_base = 1  # 1 if the files count users and items from 1, 0 if from 0
  # holdout_valid: validation pairs are removed from the training target (clean model selection); without a
  # validation file, one training target item of every user with two or more is carved out as validation
  # (drawn with data.holdout_seed). published: the files are read exactly as published.
  data.split = "holdout_valid"
  data.holdout_seed = 0
  # what a held-out validation pair is removed from: "target" (the training target only) or "all" (every
  # behavior: the user keeps no training interaction with the item, as the test split of some datasets has
  # none; retailrocket_cml). Compare the "held-out items observed in" of validation and test in --mode stats.
  data.holdout_behaviors = "target"
  # The published validation file is a subset of the training target (taobao_mbcgcn); allowed only then.
  data.valid_inside_train = False
  data.cache_dir = ""  # processed-data cache; empty: $HNT_CACHE_DIR or ~/.cache/hnt_jax
  data.use_cache = True

  # Synthetic generator (used when data.format == "synthetic"); see hnt_jax/data/synthetic.py.
  syn = data.synthetic = ml_collections.ConfigDict()
  syn.n_users = 600
  syn.n_items = 400
  syn.dim = 8
  syn.purchases_per_user = 6.0  # mean number of training purchases
  syn.hesitations_per_user = 10.0  # mean number of genuine-interest items viewed but not bought
  syn.noise_rate = 1.0  # noise (misoperation) edges per genuine auxiliary edge
  syn.cart_purchase_rate = 0.5  # share of purchased items that were also carted
  syn.cart_hesitation_rate = 0.3  # share of hesitation items that were carted
  syn.heldout_hesitation_prob = 0.8  # chance that a held-out purchase is one of the user's hesitations
  syn.popularity = 1.0  # strength of the item-popularity skew
  syn.temperature = 0.5  # sharpness of the user-item affinity
  syn.seed = 0

  # --- model ---------------------------------------------------------------
  # Settings shared by the embedding models; a model with settings of its own has a block named after it
  # (model.hnt, model.crgcn, model.heuristic), built from the module's fields, which hold the one set of
  # defaults (hnt_jax/models/__init__.py). docs/method.md explains HNT's.
  from hnt_jax.models import config_blocks
  model = config.model = ml_collections.ConfigDict()
  model.name = "hnt"  # see hnt_jax.models.REGISTRY
  model.embed_dim = 64
  model.n_layers = 2
  model.init_std = 0.1
  model.l2 = 1e-4  # λ_2: weight of ‖E⁰_batch‖² / B
  for block, settings in config_blocks().items():
    model[block] = ml_collections.ConfigDict(settings)

  # --- training -------------------------------------------------------------
  train = config.train = ml_collections.ConfigDict()
  train.epochs = 200  # upper bound; early stopping usually ends sooner
  train.batch_size = 4096  # target pairs per step
  train.optimizer = "adam"  # adam | adamw | sgd
  train.learning_rate = 1e-3
  train.weight_decay = 0.0  # adamw only
  train.lr_schedule = "constant"  # constant | cosine: decays to lr_final_fraction x learning_rate by `epochs`
  train.lr_final_fraction = 0.0  # cosine only
  train.eval_every = 5  # epochs between validation evaluations
  train.validate = True  # evaluate on validation, stop early and keep the best; False: fixed epochs, last one
  train.patience = 5  # evaluations without improvement before stopping; 0: never stop early
  train.select_metric = "ndcg@10"  # validation metric for early stopping and the best checkpoint
  train.checkpoint_every = 5  # epochs between resumable checkpoints (also after every evaluation)
  train.progress = True  # progress bar
  train.tensorboard = True  # TensorBoard event files in the workdir (tensorboardX)
  train.time_limit_minutes = 0.0  # stop (resumably) after the epoch that passes this wall time; 0: none
  # graph propagation: "auto" (SciPy CSR on the CPU backend, BCOO on accelerators), "bcoo" or "host"
  train.propagation = "auto"
  # graph propagation's dtype: "bfloat16" rounds each layer's input and output to it and, on accelerators,
  # multiplies in it (parameters, sums over layers, losses and scores stay float32)
  train.propagation_dtype = "float32"

  # --- evaluation ---------------------------------------------------------------
  ev = config.eval = ml_collections.ConfigDict()
  ev.protocol = "full"  # full | sampled
  ev.ks = "10,20,50"
  # users x items x (max held-out items + 1) per chunk; 0: `evaluate.default_chunk_cells()` (cache-sized
  # chunks on CPU, larger ones on accelerators)
  ev.chunk_cells = 0
  ev.n_negatives = 99  # sampled protocol
  ev.sample_seed = 0  # sampled protocol: fixed negatives

  # --- experiments runner (python -m hnt_jax.experiments) ------------------------
  exp = config.experiments = ml_collections.ConfigDict()
  exp.grid = ""  # "key=v1,v2;key2=..." searched on validation, the same points for every trainable model
  exp.published = ""  # "model=HR@10/NDCG@10; ..." numbers published for this dataset (published protocol)
  exp.published_source = ""  # where those numbers come from
  exp.published_protocol = "published"  # the protocol preset the published numbers belong to
  exp.published_epochs = 100  # fixed epochs of the published protocol

  # --- devices and hosts (hnt_jax/distributed.py) -------------------------------
  mesh = config.mesh = ml_collections.ConfigDict()
  mesh.data = 1  # devices on the data axis (batches, evaluation users, propagation rows); -1: all devices
  mesh.model = 1  # devices on the model axis (embedding tables split by rows)
  mesh.distributed = "auto"  # jax.distributed.initialize(): auto (when a launcher set one up) | on | off

  return config


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:argument]` the way `--config` does."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location("_hnt_config", path)
  if module_spec is None:
    raise ConfigError(f"config file {path} is not a Python file (configs/*.py define get_config())")
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f"config file {path}:{e.lineno}: {e.msg}") from None
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"config file {path} does not define get_config() (see configs/default.py)")
  return module.get_config(arg) if arg else module.get_config()


def resolve(config: ml_collections.ConfigDict, dotted: str) -> tuple[ml_collections.ConfigDict, str]:
  """(the ConfigDict that holds `dotted`'s last part, that part); a key that does not exist is a
  ConfigError with the closest existing key (`did you mean 'data.behaviors'?`)."""
  node, parts = config, dotted.split(".")
  for depth, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = ".".join(parts[:depth]) or "config"
      known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(part, known, n=1)
      hint = f"; did you mean {'.'.join(parts[:depth] + close)!r}?" if close else (
          f"; {where} has: {', '.join(sorted(known))}" if known else "")
      raise ConfigError(f"config key {dotted!r} does not exist{hint}")
    if depth < len(parts) - 1:
      node = node[part]
  return node, parts[-1]


def check_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Every `key.path[=value]` must name an existing key, and the value must fit its type."""
  for override in overrides:
    key, has_value, value = override.partition("=")
    node, last = resolve(config, key)
    current = node[last]
    if has_value and isinstance(current, (bool, int, float)) and not isinstance(current, str):
      _check_value(key, current, value)


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with `{dotted key: value}` set (a key that does not exist, or a value of the wrong
  type, is a ConfigError)."""
  config = copy.deepcopy(config)
  with config.unlocked():
    for dotted, value in overrides.items():
      node, last = resolve(config, dotted)
      try:
        node[last] = value
      except TypeError as e:
        raise ConfigError(f"config key {dotted!r}: {e}") from None
  return config


def parse_value(text: str) -> Any:
  """A command-line or grid value as the type it reads as: a boolean, an int, a float, else the string."""
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def _check_value(key: str, current, value: str) -> None:
  kind = type(current)
  try:
    if kind is bool:
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError
    elif kind is int:
      int(value)
    else:
      float(value)
  except ValueError:
    raise ConfigError(f"--config.{key}={value!r}: expected a {kind.__name__}") from None


def overrides_from_argv(argv: Sequence[str]) -> tuple[str, list[str]]:
  """The `--config` file spec and the `--config.key=value` overrides in a command line."""
  spec, overrides = "", []
  args = list(argv)
  for i, arg in enumerate(args):
    if arg.startswith("--config="):
      spec = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(args):
      spec = args[i + 1]
    elif arg.startswith("--config."):
      body = arg[len("--config."):]
      if "=" not in body and i + 1 < len(args) and not args[i + 1].startswith("--"):
        body = f"{body}={args[i + 1]}"
      overrides.append(body)
  return spec, overrides


def check_command_line(argv: Sequence[str]) -> None:
  """Unknown config keys and ill-typed values in a command line end with one clear line, before absl parses
  them (every command that takes --config calls this first)."""
  spec, overrides = overrides_from_argv(argv)
  if spec:
    check_overrides(load_config_file(spec), overrides)


# keys that describe one invocation, not the run: a run may resume with other values (other devices, a
# time limit, no progress bar) and stays the same run
INVOCATION_KEYS = ("train.progress", "train.tensorboard", "train.time_limit_minutes", "mesh.data", "mesh.model",
                   "mesh.distributed")


def flatten(d: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1} (a config as JSON, nested dicts only)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out
