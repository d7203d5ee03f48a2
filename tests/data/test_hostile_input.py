"""Dataset files as a hostile or careless user leaves them: each is read correctly or stopped with one line
that names the file (and line) and says what is wrong."""
import builtins
import logging
import os
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from hnt_jax.data import formats, load
from hnt_jax.errors import DataError
from tests.data.test_load import TOY, pairs_dataset


def loaded(tmp_path, files, **overrides):
  return load.load_dataset(pairs_dataset(tmp_path, files, **overrides))


def matrices(ds):
  return {b: m.toarray().tolist() for b, m in ds.train.items()}, ds.test.toarray().tolist()


@pytest.mark.parametrize("transform", [
    lambda t: t.replace("\n", "\r\n"),  # CRLF line endings
    lambda t: "\ufeff" + t,  # a byte-order mark
    lambda t: t.replace(" ", "\t"),  # tabs
    lambda t: t + "\n\n  \n",  # trailing blank lines
], ids=["crlf", "bom", "tabs", "trailing-blank-lines"])
def test_harmless_variations_read_the_same(tmp_path, transform):
  (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
  plain = matrices(loaded(tmp_path / "a", TOY))
  varied = {name: transform(text) for name, text in TOY.items()}
  assert matrices(loaded(tmp_path / "b", varied)) == plain


@pytest.mark.parametrize("text,message", [
    ("1 1\n1 2.0\n", "non-integer id"),
    ("1 1\n1 1e3\n", "non-integer id"),
    ("1 1\n1 99999999999999999999\n", "id too large"),
    ("1 1\n1 -2\n", "negative id"),
])
def test_float_negative_and_huge_ids_name_the_line(tmp_path, text, message):
  with pytest.raises(DataError, match=message) as err:
    loaded(tmp_path, dict(TOY, **{"view.txt": text}))
  assert err.value.path.endswith("view.txt") and err.value.line == 2


def test_huge_id_with_inferred_totals_is_named_not_allocated(tmp_path):
  files = {"view.txt": "0 0 1\n1 2\n", "buy.txt": "0 0\n1000000000000 2 1\n", "test.txt": "0 2\n"}
  with pytest.raises(DataError, match=r"user id 1000000000000 would make .* only 3 distinct user ids.*"
                                      r"--config.data.n_users") as err:
    loaded(tmp_path, files, format="adjacency", id_base=0, valid_file="", n_users=0, n_items=0)
  assert err.value.path.endswith("buy.txt") and err.value.line == 2


def test_large_dense_ids_are_still_inferred(tmp_path):
  from hnt_jax.data import validate
  users = np.arange(0, 1_500_000, 7)  # every 7th id used: sparse, but not a typo
  x = formats.Interactions(users, np.zeros_like(users), np.ones_like(users), "f")
  assert validate.inferred_total([x], "users", "n_users") == int(users.max()) + 1 > 1_000_000


def test_directory_where_a_file_should_be(tmp_path):
  folder = tmp_path / "toy"
  folder.mkdir()
  (folder / "view.txt").mkdir()
  with pytest.raises(DataError, match="expected a file .*found a directory") as err:
    loaded(tmp_path, {k: v for k, v in TOY.items() if k != "view.txt"})
  assert err.value.path.endswith("view.txt")


def test_unreadable_file_is_named(tmp_path, monkeypatch):
  data = pairs_dataset(tmp_path, TOY)
  real_open = builtins.open

  def deny(path, *a, **k):  # tests run as root, where chmod 000 does not stop a read
    if str(path).endswith("buy.txt"):
      raise PermissionError(13, "Permission denied", str(path))
    return real_open(path, *a, **k)
  monkeypatch.setattr(builtins, "open", deny)
  with pytest.raises(DataError, match=r"buy\.txt: cannot read the file \(Permission denied\)"):
    load.load_dataset(data)


def test_unwritable_cache_folder_still_loads(tmp_path, caplog):
  (tmp_path / "file").write_text("")
  with caplog.at_level(logging.WARNING):
    ds = loaded(tmp_path, TOY, cache_dir=str(tmp_path / "file" / "cache"))
  assert ds.n_users == 3 and "cannot write the processed-data cache" in caplog.text


def test_count_file_with_bad_json(tmp_path):
  with pytest.raises(DataError, match=r"count\.txt: expected JSON"):
    loaded(tmp_path, dict(TOY, **{"count.txt": '{"user": 3, "item": '}), count_file="count.txt", n_users=0,
           n_items=0)


def test_users_and_items_only_in_test_are_out_of_range_when_totals_are_declared(tmp_path):
  with pytest.raises(DataError, match="id out of range: user 4") as err:
    loaded(tmp_path, dict(TOY, **{"test.txt": "1 3\n4 2\n"}))
  assert err.value.path.endswith("test.txt") and err.value.line == 2


def test_test_split_identical_to_validation_is_refused(tmp_path):
  files = dict(TOY, **{"valid.txt": "1 3\n2 4\n"})
  with pytest.raises(DataError, match=r"2 of 2 test pair\(s\) are also validation pairs") as err:
    loaded(tmp_path, files)
  assert err.value.path.endswith("test.txt") and err.value.line == 1


@pytest.mark.parametrize("name,split", [("test.txt", "test"), ("valid.txt", "validation")])
def test_empty_held_out_split_is_refused(tmp_path, name, split):
  with pytest.raises(DataError, match=f"the {split} split has no pairs") as err:
    loaded(tmp_path, dict(TOY, **{name: "\n"}))
  assert err.value.path.endswith(name)


def pickled_dataset(tmp_path, tst_int, protocol=pickle.DEFAULT_PROTOCOL):
  folder = tmp_path / "toy"
  folder.mkdir(parents=True, exist_ok=True)
  view = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=np.int64))
  buy = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.int64))
  (folder / "trn_view").write_bytes(pickle.dumps(view, protocol=protocol))
  (folder / "trn_buy").write_bytes(pickle.dumps(buy, protocol=protocol))
  (folder / "tst_int").write_bytes(tst_int if isinstance(tst_int, bytes) else
                                   pickle.dumps(tst_int, protocol=protocol))
  data = pairs_dataset(tmp_path, {}, format="pickled_csr", id_base=0, valid_file="", test_file="tst_int",
                       n_users=0, n_items=0, split="published")
  data.files = dict(view="trn_view", buy="trn_buy")
  return data


def test_negative_item_in_pickled_test_list_is_refused(tmp_path):
  with pytest.raises(DataError, match="negative id: user 1, item -5") as err:
    load.load_dataset(pickled_dataset(tmp_path, [2, -5, None]))
  assert err.value.path.endswith("tst_int")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_reads(tmp_path, protocol):
  ds = load.load_dataset(pickled_dataset(tmp_path, [2, None, 0], protocol=protocol))
  assert ds.train["view"].toarray().tolist() == [[1, 0, 1], [0, 1, 0], [1, 1, 0]]
  assert ds.test.toarray().tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]


def test_truncated_pickle_is_named(tmp_path):
  whole = pickle.dumps([2, None, 0])
  with pytest.raises(DataError, match=r"tst_int: not a readable pickle"):
    load.load_dataset(pickled_dataset(tmp_path, whole[: len(whole) // 2]))


class Marker:
  """Unpickling runs `open(path, "w")` if the unpickler lets it: the file must never appear."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, "w"))


def test_malicious_pickles_never_run(tmp_path):
  marker = str(tmp_path / "pwned")
  protocol0_via_copyreg = (b"ccopy_reg\n_reconstructor\n(cbuiltins\nopen\nc__builtin__\nobject\nNtR.")
  codec = b"c_codecs\nencode\n(Vx\nVrot13\ntR."
  for i, payload in enumerate([pickle.dumps(Marker(marker), protocol=p) for p in (0, 2, 5)]
                              + [protocol0_via_copyreg, codec]):
    with pytest.raises(DataError, match="refusing|not a readable pickle"):
      load.load_dataset(pickled_dataset(tmp_path / str(i), payload))
  assert not os.path.exists(marker)
