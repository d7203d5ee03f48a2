"""Readers for the three published file formats of multi-behavior datasets.

* "pairs" (MuLe / CRGCN lineage): one `user item` per line.
* "adjacency" lists (NGCF / LightGCN / GHCF lineage): `user item1 item2 ...` per line.
* "pickled csr" (MATN / KHGT / CML lineage): pickled `scipy.sparse.csr_matrix` per behavior and a pickled
  list with the test item per user (or None). Unpickled through a whitelist of classes only.

Text files are parsed with vectorized NumPy over the raw bytes (no Python loop per line); every malformed
line is reported with its file and line number. Readers return raw ids exactly as in the file; id-base
conversion and range checks happen in `hnt_jax.data.validate`.
"""
from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import scipy.sparse as sp

from hnt_jax.errors import DataError

_MAX_DIGITS = 18  # fits int64 with room to spare


@dataclasses.dataclass(frozen=True)
class Interactions:
  """Raw (user, item) pairs read from one file, with the 1-based line each pair came from."""
  users: np.ndarray  # int64
  items: np.ndarray  # int64
  lines: np.ndarray  # int64, 1-based line numbers (0 where the source has no lines)
  path: str

  def __len__(self) -> int:
    return int(self.users.shape[0])

  def where(self, k: int) -> str:
    """`path:line` of pair k, for messages."""
    line = int(self.lines[k])
    return f"{self.path}:{line}" if line > 0 else self.path


def _line_text(buf: np.ndarray, line_index: int) -> str:
  """The text of 0-based line `line_index` of `buf`, shortened for messages."""
  newlines = np.flatnonzero(buf == 10)
  start = 0 if line_index == 0 else int(newlines[line_index - 1]) + 1
  end = int(newlines[line_index]) if line_index < newlines.shape[0] else buf.shape[0]
  text = bytes(buf[start:end]).decode("utf-8", errors="replace").rstrip("\r")
  return text if len(text) <= 80 else text[:77] + "..."


def _tokenize(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Splits a whitespace-separated file of non-negative integers.

  Returns (values, line index of each token (0-based), number of tokens on each line).
  """
  with open(path, "rb") as f:
    data = f.read()
  if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (saved by some editors): read as spaces
    data = b"   " + data[3:]
  buf = np.frombuffer(data, dtype=np.uint8)
  if buf.shape[0] == 0:
    return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.int64),)
  is_digit = (buf >= 48) & (buf <= 57)
  is_space = (buf == 32) | (buf == 9) | (buf == 13) | (buf == 10)
  bad = ~(is_digit | is_space)
  if bad.any():
    pos = int(np.argmax(bad))
    line = int(np.count_nonzero(buf[:pos] == 10))
    text = _line_text(buf, line)
    if buf[pos] == ord("-") and pos + 1 < buf.shape[0] and is_digit[pos + 1]:
      what = "negative id"
    elif buf[pos] in (ord("."), ord("e"), ord("E")) and pos > 0 and is_digit[pos - 1]:
      what = "non-integer id"
    else:
      what = f"unexpected character {chr(buf[pos])!r}" if 32 <= buf[pos] < 127 else (
          f"unexpected byte 0x{int(buf[pos]):02x}")
    raise DataError(f"{what} (ids must be non-negative integers separated by spaces or tabs): "
                    f"{text!r}", path, line + 1)
  prev_digit = np.concatenate([[False], is_digit[:-1]])
  next_digit = np.concatenate([is_digit[1:], [False]])
  starts = np.flatnonzero(is_digit & ~prev_digit)
  ends = np.flatnonzero(is_digit & ~next_digit) + 1
  line_of_byte = np.cumsum(buf == 10)
  n_lines = int(line_of_byte[-1]) + (0 if buf[-1] == 10 else 1)
  token_line = line_of_byte[starts].astype(np.int64)
  lengths = ends - starts
  if lengths.shape[0] and lengths.max() > _MAX_DIGITS:
    k = int(np.argmax(lengths > _MAX_DIGITS))
    raise DataError(f"id too large ({lengths[k]} digits): {_line_text(buf, int(token_line[k]))!r}",
                    path, int(token_line[k]) + 1)
  values = _parse_digits(buf, starts, lengths)
  per_line = np.bincount(token_line, minlength=n_lines)
  return values, token_line, per_line


def _parse_digits(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Integer value of each digit run, vectorized over runs (grouped by length)."""
  values = np.zeros(starts.shape[0], dtype=np.int64)
  for length in np.unique(lengths):
    sel = np.flatnonzero(lengths == length)
    pos = starts[sel][:, None] + np.arange(length)[None, :]
    digits = buf[pos].astype(np.int64) - 48
    weights = 10 ** np.arange(length - 1, -1, -1, dtype=np.int64)
    values[sel] = digits @ weights
  return values


def read_pairs(path: os.PathLike | str) -> Interactions:
  """Reads a "pairs" file: `user item` per line (blank lines are skipped)."""
  path = str(path)
  values, token_line, per_line = _tokenize(path)
  wrong = np.flatnonzero((per_line != 0) & (per_line != 2))
  if wrong.shape[0]:
    line = int(wrong[0])
    with open(path, "rb") as f:
      buf = np.frombuffer(f.read(), dtype=np.uint8)
    raise DataError(f"malformed line: expected 'user item', found {int(per_line[line])} field(s): "
                    f"{_line_text(buf, line)!r}", path, line + 1)
  return Interactions(values[0::2], values[1::2], token_line[0::2] + 1, path)


def read_adjacency(path: os.PathLike | str) -> Interactions:
  """Reads an "adjacency lists" file: `user item1 item2 ...` per line (a user alone has no items)."""
  path = str(path)
  values, token_line, _ = _tokenize(path)
  first = np.ones(token_line.shape[0], dtype=bool)
  first[1:] = token_line[1:] != token_line[:-1]
  first_index = np.flatnonzero(first)
  owner = np.cumsum(first) - 1  # which line-start token each token belongs to
  users = values[first_index][owner]
  keep = ~first
  return Interactions(users[keep], values[keep], token_line[keep] + 1, path)


# --- pickled csr ----------------------------------------------------------------------------------

def _allowed_pickle_classes() -> dict[tuple[str, str], object]:
  from numpy._core import multiarray  # numpy >= 2
  allowed = {
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): np.dtype,
  }
  from numpy._core import numeric
  for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    allowed[(mod, "_reconstruct")] = multiarray._reconstruct
    allowed[(mod, "scalar")] = multiarray.scalar
  for mod in ("numpy.core.numeric", "numpy._core.numeric"):  # protocol 5: an array from its bytes
    allowed[(mod, "_frombuffer")] = numeric._frombuffer
  for mod in ("scipy.sparse.csr", "scipy.sparse._csr"):
    allowed[(mod, "csr_matrix")] = sp.csr_matrix
  for mod in ("scipy.sparse.coo", "scipy.sparse._coo"):
    allowed[(mod, "coo_matrix")] = sp.coo_matrix
  for mod in ("scipy.sparse.csc", "scipy.sparse._csc"):
    allowed[(mod, "csc_matrix")] = sp.csc_matrix
  # protocols 0-2 (and Python 2 pickles) rebuild objects through copyreg and bytes through codecs: both
  # are allowed only as guarded wrappers that accept the classes above and the latin-1 codec
  classes = tuple(v for v in allowed.values() if isinstance(v, type))
  for mod in ("copy_reg", "copyreg"):
    allowed[(mod, "_reconstructor")] = _guarded_reconstructor(classes)
  for mod in ("__builtin__", "builtins"):
    allowed[(mod, "object")] = object
  allowed[("_codecs", "encode")] = _latin1_encode
  return allowed


def _guarded_reconstructor(classes: tuple[type, ...]):
  import copyreg

  def reconstruct(cls, base, state):
    if cls not in classes or base not in (object,) + classes:
      raise pickle.UnpicklingError(f"refusing to rebuild {getattr(cls, '__name__', cls)!r}")
    return copyreg._reconstructor(cls, base, state)
  return reconstruct


def _latin1_encode(text, encoding="utf-8", errors="strict"):
  if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() not in (
      "latin1", "iso88591"):
    raise pickle.UnpicklingError(f"refusing to decode pickled bytes with codec {encoding!r}")
  return text.encode("latin-1", errors)


class _SafeUnpickler(pickle.Unpickler):
  """Resolves only sparse-matrix and array classes; anything else is refused."""

  def __init__(self, f, path: str):
    super().__init__(f, encoding="latin1")
    self._path = path
    self._allowed = _allowed_pickle_classes()

  def find_class(self, module, name):
    try:
      return self._allowed[(module, name)]
    except KeyError:
      raise DataError(f"refusing to unpickle {module}.{name}: only scipy sparse matrices and numpy "
                      "arrays are allowed in dataset pickles", self._path) from None


def safe_unpickle(path: os.PathLike | str):
  """Loads a pickle that may contain only scipy sparse matrices, numpy arrays and plain Python data."""
  path = str(path)
  with open(path, "rb") as f:
    try:
      return _SafeUnpickler(f, path).load()
    except DataError:
      raise
    except Exception as e:  # any corruption: truncated stream, bad opcode, wrong types
      raise DataError(f"not a readable pickle ({type(e).__name__}: {e})", path) from None


def read_pickled_csr(path: os.PathLike | str) -> sp.csr_matrix:
  """Reads a pickled users x items sparse matrix (values, e.g. timestamps, are ignored)."""
  path = str(path)
  obj = safe_unpickle(path)
  if not sp.issparse(obj) or obj.ndim != 2:
    raise DataError(f"expected a pickled scipy sparse users x items matrix, found {type(obj).__name__}",
                    path)
  try:
    mat = sp.csr_matrix(obj)
    mat.check_format(full_check=True)
  except Exception as e:
    raise DataError(f"corrupt sparse matrix ({e})", path) from None
  return mat


def read_pickled_list(path: os.PathLike | str) -> Interactions:
  """Reads a pickled per-user list of held-out items (`tst_int`): entry u is an item id, or None."""
  path = str(path)
  obj = safe_unpickle(path)
  if isinstance(obj, np.ndarray):
    obj = obj.tolist()
  if not isinstance(obj, (list, tuple)):
    raise DataError(f"expected a pickled list of item ids per user, found {type(obj).__name__}", path)
  users, items = [], []
  for u, entry in enumerate(obj):
    if entry is None:
      continue
    entries = entry if isinstance(entry, (list, tuple, np.ndarray)) else [entry]
    for item in entries:
      if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)):
        raise DataError(f"entry {u}: expected an integer item id or None, found {item!r}", path)
      users.append(u)
      items.append(int(item))
  return Interactions(np.asarray(users, np.int64), np.asarray(items, np.int64),
                      np.zeros(len(users), np.int64), path)


def csr_to_interactions(mat: sp.csr_matrix, path: str) -> Interactions:
  """The non-zero entries of a users x items matrix as raw 0-based pairs."""
  mat = sp.csr_matrix(mat)
  mat.eliminate_zeros()
  coo = mat.tocoo()
  return Interactions(coo.row.astype(np.int64), coo.col.astype(np.int64),
                      np.zeros(coo.nnz, np.int64), path)
