"""Readers: correct values on well-formed files, a DataError naming file and line on anything else."""
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

from hnt_jax.data import formats
from hnt_jax.errors import DataError


def write(tmp_path, text, name="f.txt"):
  path = tmp_path / name
  path.write_bytes(text.encode() if isinstance(text, str) else text)
  return path


def test_pairs_reads_values_and_line_numbers(tmp_path):
  x = formats.read_pairs(write(tmp_path, "1 2\n3\t4\r\n\n  5 6  \n7 8"))
  assert x.users.tolist() == [1, 3, 5, 7]
  assert x.items.tolist() == [2, 4, 6, 8]
  assert x.lines.tolist() == [1, 2, 4, 5]


def test_pairs_empty_file_gives_no_pairs(tmp_path):
  assert len(formats.read_pairs(write(tmp_path, ""))) == 0


@pytest.mark.parametrize("text,line,message", [
    ("1 2\n3 4 5\n", 2, "found 3 field"),
    ("1 2\n3\n", 2, "found 1 field"),
    ("1 2\n1 -4\n", 2, "negative id"),
    ("1 2\n\n1 2.5\n", 3, "non-integer id"),
    ("1 2\n1 x\n", 2, "unexpected character 'x'"),
    ("1 2\n1 12345678901234567890\n", 2, "id too large"),
])
def test_pairs_errors_name_file_and_line(tmp_path, text, line, message):
  path = write(tmp_path, text)
  with pytest.raises(DataError) as err:
    formats.read_pairs(path)
  assert err.value.line == line
  assert err.value.path == str(path)
  assert message in str(err.value)
  assert str(err.value).startswith(f"{path}:{line}: ")


def test_adjacency_expands_each_line(tmp_path):
  x = formats.read_adjacency(write(tmp_path, "0 5 6 7\n1\n2 9\n\n3 1 2\n"))
  assert x.users.tolist() == [0, 0, 0, 2, 3, 3]
  assert x.items.tolist() == [5, 6, 7, 9, 1, 2]
  assert x.lines.tolist() == [1, 1, 1, 3, 5, 5]


def naive_pairs(text: str):
  users, items = [], []
  for line in text.split("\n"):
    fields = line.split()
    if not fields:
      continue
    assert len(fields) == 2
    users.append(int(fields[0]))
    items.append(int(fields[1]))
  return users, items


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_pairs_fuzz_arbitrary_bytes_clean_error_or_valid(tmp_path_factory, data):
  path = tmp_path_factory.mktemp("fuzz") / "f.txt"
  path.write_bytes(data)
  try:
    x = formats.read_pairs(path)
  except DataError as e:
    assert str(path) in str(e)
    return
  users, items = naive_pairs(data.removeprefix(b"\xef\xbb\xbf").decode("ascii"))  # a leading BOM is allowed
  assert x.users.tolist() == users and x.items.tolist() == items


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 10**12), min_size=1, max_size=5), max_size=20),
       st.sampled_from([" ", "\t", "  "]), st.sampled_from(["\n", "\r\n"]))
def test_adjacency_fuzz_matches_naive_parser(tmp_path_factory, rows, sep, eol):
  path = tmp_path_factory.mktemp("adj") / "f.txt"
  path.write_text(eol.join(sep.join(map(str, r)) for r in rows), newline="")
  x = formats.read_adjacency(path)
  users = [r[0] for r in rows for _ in r[1:]]
  items = [i for r in rows for i in r[1:]]
  assert x.users.tolist() == users and x.items.tolist() == items


def test_pickled_csr_round_trip_and_whitelist(tmp_path):
  mat = sp.csr_matrix(np.array([[0, 5, 0], [7, 0, 0]], dtype=np.int64))
  path = tmp_path / "trn_buy"
  path.write_bytes(pickle.dumps(mat))
  back = formats.read_pickled_csr(path)
  assert (back != mat).nnz == 0

  class Evil:
    def __reduce__(self):
      import os
      return (os.system, ("echo pwned",))

  evil = tmp_path / "evil"
  evil.write_bytes(pickle.dumps(Evil()))
  with pytest.raises(DataError, match="refusing to unpickle"):
    formats.read_pickled_csr(evil)


def test_pickled_list_reads_items_and_none(tmp_path):
  path = tmp_path / "tst_int"
  path.write_bytes(pickle.dumps([3, None, np.int64(4)]))
  x = formats.read_pickled_list(path)
  assert x.users.tolist() == [0, 2] and x.items.tolist() == [3, 4]
  bad = tmp_path / "bad"
  bad.write_bytes(pickle.dumps([3, "x"]))
  with pytest.raises(DataError, match="entry 1"):
    formats.read_pickled_list(bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_unpickle_fuzz_arbitrary_bytes_clean_error(tmp_path_factory, data):
  path = tmp_path_factory.mktemp("pkl") / "trn_x"
  path.write_bytes(data)
  try:
    formats.read_pickled_csr(path)
  except DataError:
    pass
