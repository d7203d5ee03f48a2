"""Loads the dataset a config describes: resolve files, read, validate, split, cache.

`load_dataset(config.data)` is the one entry point. A processed copy is cached as .npz under the user cache
directory, keyed by the source files' sha256 and every setting that changes the result, so the second load
of the same data is near-instant; it is never written beside the data.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import numpy as np
import scipy.sparse as sp

from hnt_jax.data import formats, validate
from hnt_jax.data.dataset import Dataset, binary_csr
from hnt_jax.data.download import how_to_get, sha256_of
from hnt_jax.errors import ConfigError, DataError, DatasetNotFoundError

FORMATS = ("pairs", "adjacency", "pickled_csr", "synthetic")
SPLITS = ("holdout_valid", "published")
HOLDOUT_BEHAVIORS = ("target", "all")  # data.holdout_behaviors
_CACHE_VERSION = 2  # 2: validation carved from training when no file ships one

log = logging.getLogger(__name__)


def parse_behaviors(data_cfg) -> tuple[str, ...]:
  """The behaviors to read, in cascade order, target last."""
  behaviors = tuple(b.strip() for b in str(data_cfg.behaviors).split(",") if b.strip())
  if not behaviors:
    raise ConfigError("data.behaviors is empty; list behaviors in cascade order, target last")
  if len(set(behaviors)) != len(behaviors):
    raise ConfigError(f"data.behaviors lists a behavior twice: {data_cfg.behaviors!r}")
  if behaviors[-1] != data_cfg.target:
    raise ConfigError(f"data.behaviors={data_cfg.behaviors!r} must end with the target behavior "
                      f"data.target={data_cfg.target!r}")
  return behaviors


def resolve_data_dir(data_cfg) -> str:
  """data.dir, else $HNT_DATA_DIR; the dataset folder is <that>/<data.subdir>."""
  root = data_cfg.dir or os.environ.get("HNT_DATA_DIR", "")
  if not root:
    raise DatasetNotFoundError(
        f"no data directory for dataset {data_cfg.name!r}: set --config.data.dir=DIR or the "
        f"HNT_DATA_DIR environment variable to the folder that holds {data_cfg.subdir!r}.\n"
        + how_to_get(data_cfg.subdir, ""))
  folder = os.path.join(root, data_cfg.subdir)
  if not os.path.isdir(folder):
    raise DatasetNotFoundError(f"dataset folder {folder} does not exist.\n"
                               + how_to_get(data_cfg.subdir, root))
  return folder


def cache_dir(data_cfg) -> str:
  return (data_cfg.cache_dir or os.environ.get("HNT_CACHE_DIR", "")
          or os.path.join(os.path.expanduser("~"), ".cache", "hnt_jax"))


def load_dataset(data_cfg) -> Dataset:
  """Reads, validates and splits the dataset `data_cfg` (the `data` block of a config) describes."""
  if data_cfg.format not in FORMATS:
    raise ConfigError(f"data.format={data_cfg.format!r} is not one of {', '.join(FORMATS)}")
  if data_cfg.split not in SPLITS:
    raise ConfigError(f"data.split={data_cfg.split!r} is not one of {', '.join(SPLITS)}")
  behaviors = parse_behaviors(data_cfg)
  if data_cfg.format == "synthetic":
    from hnt_jax.data import synthetic
    return synthetic.generate(data_cfg.synthetic, behaviors, name=data_cfg.name)
  folder = resolve_data_dir(data_cfg)
  paths = _source_paths(data_cfg, folder, behaviors)
  key = _cache_key(data_cfg, behaviors, paths)
  cache_path = os.path.join(cache_dir(data_cfg), f"{data_cfg.name}-{key[:20]}.npz")
  if data_cfg.use_cache and os.path.exists(cache_path):
    try:
      return _load_cache(cache_path)
    except Exception:  # a damaged cache is rebuilt, never trusted
      pass
  ds = _read(data_cfg, behaviors, paths)
  if data_cfg.use_cache:
    try:
      _save_cache(ds, cache_path)
    except OSError as e:  # the cache only saves time: a folder that cannot be written is no error
      log.warning("cannot write the processed-data cache %s (%s); set data.cache_dir or HNT_CACHE_DIR to a "
                  "writable folder to load faster next time", cache_path, e.strerror or e)
  return ds


def _source_paths(data_cfg, folder: str, behaviors) -> dict[str, str]:
  files = dict(data_cfg.files)
  paths = {}
  for b in behaviors:
    if b not in files:
      raise ConfigError(f"behavior {b!r} has no file in data.files (known: {', '.join(files)})")
    paths[b] = os.path.join(folder, files[b])
  for role, name in (("valid", data_cfg.valid_file), ("test", data_cfg.test_file),
                     ("count", data_cfg.count_file)):
    if name:
      paths[role] = os.path.join(folder, name)
  for role, path in paths.items():
    if os.path.isdir(path):
      raise DataError(f"expected a file ({role}), found a directory", path)
    if os.path.isfile(path):
      try:
        with open(path, "rb"):
          pass
      except OSError as e:
        raise DataError(f"cannot read the file ({e.strerror})", path) from None
      continue
    if role == behaviors[-1]:
      what, hint = f"target behavior {role!r}", "the target behavior cannot be dropped"
    elif role in behaviors:
      others = ",".join(b for b in behaviors if b != role)
      what, hint = f"behavior {role!r}", f"to run without it: --config.data.behaviors={others}"
    elif role == "count":
      what, hint = "user/item counts", "set by data.count_file (or declare data.n_users, data.n_items)"
    else:
      what, hint = f"{role} split", f"set by data.{role}_file"
    raise DatasetNotFoundError(f"missing file {path} ({what}); {hint}")
  return paths


def _cache_key(data_cfg, behaviors, paths) -> str:
  settings = dict(version=_CACHE_VERSION, format=data_cfg.format, behaviors=behaviors,
                  id_base=data_cfg.id_base, split=data_cfg.split, n_users=data_cfg.n_users,
                  n_items=data_cfg.n_items, valid_inside_train=data_cfg.valid_inside_train,
                  holdout_seed=data_cfg.holdout_seed if not data_cfg.valid_file else None,
                  holdout_behaviors=data_cfg.holdout_behaviors,
                  files={role: (os.path.basename(p), sha256_of(p)) for role, p in sorted(paths.items())})
  return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _declared_totals(data_cfg, paths, parts) -> tuple[int, int]:
  n_users, n_items = int(data_cfg.n_users), int(data_cfg.n_items)
  if "count" in paths and not (n_users and n_items):
    path = paths["count"]
    try:
      with open(path) as f:
        counts = json.load(f)
      n_users, n_items = int(counts["user"]), int(counts["item"])
    except (ValueError, KeyError, TypeError) as e:
      raise DataError(f'expected JSON {{"user": M, "item": N}} ({type(e).__name__}: {e})', path) from None
  if not n_users:
    n_users = validate.inferred_total(parts, "users", "n_users")
  if not n_items:
    n_items = validate.inferred_total(parts, "items", "n_items")
  return n_users, n_items


def _read(data_cfg, behaviors, paths) -> Dataset:
  base = int(data_cfg.id_base)
  raw: dict[str, formats.Interactions] = {}
  shapes = {}
  for role in list(behaviors) + ["valid", "test"]:
    if role not in paths:
      continue
    path = paths[role]
    if data_cfg.format == "pairs":
      raw[role] = formats.read_pairs(path)
    elif data_cfg.format == "adjacency":
      raw[role] = formats.read_adjacency(path)
    elif role in behaviors:  # pickled csr
      mat = formats.read_pickled_csr(path)
      shapes[role] = mat.shape
      raw[role] = formats.csr_to_interactions(mat, path)
    else:
      raw[role] = formats.read_pickled_list(path)
  if shapes and len(set(shapes.values())) > 1:
    raise DataError("behavior matrices disagree on their shape: "
                    + ", ".join(f"{paths[b]} {s}" for b, s in shapes.items()))
  raw = {role: validate.to_zero_based(x, base) for role, x in raw.items()}
  if shapes:
    n_users, n_items = next(iter(shapes.values()))
  else:
    n_users, n_items = _declared_totals(data_cfg, paths, list(raw.values()))
  for x in raw.values():
    validate.check_in_range(x, n_users, n_items, base)
  for b in behaviors:
    validate.check_not_empty(raw[b], b)

  train, duplicates = {}, {}
  for b in behaviors:
    train[b], duplicates[b] = validate.to_binary_csr(raw[b], n_users, n_items)
  target = behaviors[-1]
  info: dict[str, Any] = dict(split=data_cfg.split, duplicates=duplicates,
                              sources={role: p for role, p in paths.items()})
  valid = None
  for split, name in (("valid", "validation"), ("test", "test")):
    if split in raw:
      validate.check_split_not_empty(raw[split], name)
  if "valid" in raw:
    valid, duplicates["valid"] = validate.to_binary_csr(raw["valid"], n_users, n_items)
    overlap = validate.pairs_in(raw["valid"], train[target])
    if data_cfg.split == "holdout_valid":
      held = train[target].multiply(valid)
      info["heldout_from_train"] = int(held.nnz)
      train[target] = binary_csr(train[target] - held)
      if train[target].nnz == 0:
        raise DataError(f"behavior {target!r} is empty once validation pairs are held out",
                        paths[target])
    elif overlap.any() and not data_cfg.valid_inside_train:
      validate.check_no_leakage(raw["valid"], train[target], "validation", paths[target])
  if valid is None and data_cfg.split == "holdout_valid":  # no validation file: carve one item per user
    valid = validate.carve_validation(train[target], int(data_cfg.holdout_seed))
    train[target] = binary_csr(train[target] - valid)
    info.update(heldout_from_train=int(valid.nnz), valid_carved_seed=int(data_cfg.holdout_seed))
  if valid is not None and data_cfg.split == "holdout_valid" and data_cfg.holdout_behaviors == "all":
    info["heldout_from_auxiliary"] = {}
    for b in behaviors[:-1]:  # the user keeps no training interaction with a validation item
      held = train[b].multiply(valid)
      info["heldout_from_auxiliary"][b] = int(held.nnz)
      train[b] = binary_csr(train[b] - held)
      if train[b].nnz == 0:
        raise DataError(f"behavior {b!r} is empty once validation pairs are held out of every behavior "
                        "(data.holdout_behaviors=all)", paths[b])
  test, duplicates["test"] = validate.to_binary_csr(raw["test"], n_users, n_items)
  if "valid" in raw:  # a carved validation split comes from training, which the test split may not touch
    validate.check_disjoint(raw["test"], valid, paths["valid"])
  validate.check_no_leakage(raw["test"], train[target], "test", paths[target])
  info["users_without_test"] = int(n_users - np.count_nonzero(np.diff(test.indptr)))
  return Dataset(name=data_cfg.name, n_users=n_users, n_items=n_items, behaviors=behaviors,
                 train=train, valid=valid, test=test, id_base=base, info=info)


# --- processed cache --------------------------------------------------------------------------------

def _save_cache(ds: Dataset, path: str) -> None:
  arrays: dict[str, np.ndarray] = {}
  mats = {f"train/{b}": m for b, m in ds.train.items()}
  mats["test"] = ds.test
  if ds.valid is not None:
    mats["valid"] = ds.valid
  for key, m in mats.items():
    arrays[f"{key}/indptr"] = m.indptr
    arrays[f"{key}/indices"] = m.indices
  meta = dict(name=ds.name, n_users=ds.n_users, n_items=ds.n_items, behaviors=list(ds.behaviors),
              id_base=ds.id_base, info=ds.info, has_valid=ds.valid is not None)
  arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp.npz"
  try:
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _load_cache(path: str) -> Dataset:
  with np.load(path) as z:
    meta = json.loads(bytes(z["meta"]).decode())
    shape = (meta["n_users"], meta["n_items"])

    def mat(key):
      indices = z[f"{key}/indices"]
      return sp.csr_matrix((np.ones(indices.shape[0], np.float32), indices, z[f"{key}/indptr"]),
                           shape=shape)

    train = {b: mat(f"train/{b}") for b in meta["behaviors"]}
    valid = mat("valid") if meta["has_valid"] else None
    test = mat("test")
  return Dataset(name=meta["name"], n_users=meta["n_users"], n_items=meta["n_items"],
                 behaviors=tuple(meta["behaviors"]), train=train, valid=valid, test=test,
                 id_base=meta["id_base"], info=meta["info"])
