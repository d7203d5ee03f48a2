"""Checks that turn raw interactions into trustworthy matrices, with errors naming file and line."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from hnt_jax.errors import DataError
from hnt_jax.data.formats import Interactions


def to_zero_based(x: Interactions, id_base: int) -> Interactions:
  """Shifts ids to 0-based; an id below the base is reported with its line."""
  if id_base == 0 or len(x) == 0:
    return x
  low = (x.users < id_base) | (x.items < id_base)
  if low.any():
    k = int(np.argmax(low))
    raise DataError(f"id below the dataset's id base {id_base} (user {x.users[k]}, item {x.items[k]}); "
                    f"set data.id_base=0 if the files count from 0", x.path, _line(x, k))
  return Interactions(x.users - id_base, x.items - id_base, x.lines, x.path)


def check_in_range(x: Interactions, n_users: int, n_items: int, id_base: int) -> None:
  """Every 0-based id must be at least 0 and below the declared totals."""
  if len(x) == 0:
    return
  negative = (x.users < 0) | (x.items < 0)
  if negative.any():
    k = int(np.argmax(negative))
    raise DataError(f"negative id: user {x.users[k] + id_base}, item {x.items[k] + id_base}", x.path,
                    _line(x, k))
  bad = (x.users >= n_users) | (x.items >= n_items)
  if bad.any():
    k = int(np.argmax(bad))
    raise DataError(
        f"id out of range: user {x.users[k] + id_base}, item {x.items[k] + id_base} "
        f"(the dataset declares {n_users} users and {n_items} items, ids from {id_base})",
        x.path, _line(x, k))


def check_not_empty(x: Interactions, behavior: str) -> None:
  if len(x) == 0:
    raise DataError(f"behavior {behavior!r} has no interactions; drop it from data.behaviors",
                    x.path)


def check_split_not_empty(x: Interactions, split_name: str) -> None:
  if len(x) == 0:
    raise DataError(f"the {split_name} split has no pairs: there would be nothing to evaluate", x.path)


def check_disjoint(test: Interactions, valid: sp.csr_matrix, valid_path: str) -> None:
  """A test pair that is also a validation pair means model selection sees the test answers."""
  _refuse_shared(test, valid, f"of {len(test)} test pair(s) are also validation pairs in {valid_path}: "
                 "model selection would see the test answers")


# An inferred total (the largest id + 1) may exceed the distinct ids by this factor before the largest
# id is taken for a typo: ids are expected to be near-dense, and every missing id still costs memory.
SPARSE_ID_FACTOR = 100
SPARSE_ID_FLOOR = 1_000_000


def inferred_total(parts: list[Interactions], axis: str, declare: str) -> int:
  """The number of users (`axis="users"`) or items implied by the largest id in `parts`: an id far beyond
  all the others is reported with its file and line instead of sizing the matrices after it."""
  arrays = [(getattr(x, axis), x) for x in parts if len(x)]
  if not arrays:
    return 0
  top_value, top = max(((int(a.max()), x) for a, x in arrays), key=lambda t: t[0])
  total = top_value + 1
  if total <= SPARSE_ID_FLOOR:
    return total
  distinct = np.unique(np.concatenate([a for a, _ in arrays])).shape[0]
  if total > SPARSE_ID_FACTOR * distinct or total > 2 ** 31 - 1:
    ids = getattr(top, axis)
    k = int(np.argmax(ids == top_value))
    noun = axis[:-1]
    raise DataError(
        f"{noun} id {top_value} would make {total:,} {axis} for only {distinct:,} distinct {noun} ids; "
        f"fix the id, or declare the total with --config.data.{declare}=N if it is genuine",
        top.path, _line(top, k))
  return total


def carve_validation(target: sp.csr_matrix, seed: int) -> sp.csr_matrix:
  """One training target item per user with at least two, drawn uniformly with `seed`: the validation split
  of a dataset that ships none. Users with a single purchase keep it for training."""
  degree = np.diff(target.indptr)
  users = np.flatnonzero(degree >= 2)
  draws = np.random.default_rng(seed).random(target.shape[0])[users]
  picks = target.indptr[users] + np.minimum((draws * degree[users]).astype(np.int64), degree[users] - 1)
  items = target.indices[picks]
  valid = sp.csr_matrix((np.ones(users.shape[0], np.float32), (users, items)), shape=target.shape)
  valid.sort_indices()
  return valid


def to_binary_csr(x: Interactions, n_users: int, n_items: int) -> tuple[sp.csr_matrix, int]:
  """Binary users x items CSR matrix (sorted indices) and the number of duplicate pairs removed."""
  keys = x.users * n_items + x.items
  unique = np.unique(keys)
  rows, cols = np.divmod(unique, n_items)
  mat = sp.csr_matrix((np.ones(unique.shape[0], np.float32), (rows, cols)),
                      shape=(n_users, n_items))
  mat.sort_indices()
  return mat, int(keys.shape[0] - unique.shape[0])


def pairs_in(x: Interactions, mat: sp.csr_matrix) -> np.ndarray:
  """Boolean mask: which pairs of `x` are non-zero in `mat`."""
  if len(x) == 0:
    return np.zeros(0, bool)
  return np.asarray(mat[x.users, x.items]).ravel() != 0


def check_no_leakage(heldout: Interactions, train_target: sp.csr_matrix, split_name: str,
                     train_path: str) -> None:
  """A held-out pair that is also a training target pair would be masked out of ranking: an error."""
  _refuse_shared(heldout, train_target,
                 f"{split_name} pair(s) also appear in the training target {train_path} (leakage)")


def _refuse_shared(x: Interactions, mat: sp.csr_matrix, what: str) -> None:
  """A DataError at the first pair of `x` that is non-zero in `mat`: "<count> <what>; first: ..."."""
  shared = pairs_in(x, mat)
  if shared.any():
    k = int(np.argmax(shared))
    raise DataError(f"{int(shared.sum())} {what}; first: user {x.users[k]}, item {x.items[k]} (0-based)",
                    x.path, _line(x, k))


def _line(x: Interactions, k: int):
  line = int(x.lines[k])
  return line if line > 0 else None
