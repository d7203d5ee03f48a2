"""Loading a dataset folder: validation errors with file and line, splits, duplicates, cache."""
import json
import pickle

import ml_collections
import numpy as np
import pytest
import scipy.sparse as sp

from hnt_jax.config import base_config
from hnt_jax.data import formats, load
from hnt_jax.errors import ConfigError, DataError, DatasetNotFoundError


def pairs_dataset(tmp_path, files, **overrides) -> ml_collections.ConfigDict:
  """A "pairs" dataset folder with the given file contents and a config pointing at it."""
  folder = tmp_path / "toy"
  folder.mkdir(exist_ok=True)
  for name, text in files.items():
    (folder / name).write_text(text)
  config = base_config()
  data = config.data
  data.name, data.format, data.dir, data.subdir = "toy", "pairs", str(tmp_path), "toy"
  data.behaviors, data.target = "view,buy", "buy"
  data.files = dict(view="view.txt", buy="buy.txt")
  data.valid_file, data.test_file = "valid.txt", "test.txt"
  data.n_users, data.n_items, data.id_base = 3, 4, 1
  for key, value in overrides.items():
    data[key] = value
  return data


TOY = {
    "view.txt": "1 1\n1 2\n2 3\n3 4\n1 1\n",  # one duplicate
    "buy.txt": "1 1\n2 3\n2 2\n3 4\n",
    "valid.txt": "2 2\n",  # inside buy.txt
    "test.txt": "1 3\n2 4\n",  # user 3 has no test item
}


def test_toy_dataset_holdout_valid(tmp_path):
  ds = load.load_dataset(pairs_dataset(tmp_path, TOY))
  assert ds.n_users == 3 and ds.n_items == 4 and ds.behaviors == ("view", "buy")
  assert ds.train["view"].nnz == 4 and ds.info["duplicates"]["view"] == 1
  buy = ds.train["buy"].toarray()
  assert buy[1, 1] == 0 and buy.sum() == 3  # validation pair (2,2) -> 0-based (1,1) held out
  assert ds.info["heldout_from_train"] == 1
  assert ds.valid.toarray()[1, 1] == 1
  assert ds.test.toarray()[0, 2] == 1 and ds.test.toarray()[1, 3] == 1
  assert ds.info["users_without_test"] == 1
  assert ds.evaluated_users("test").tolist() == [0, 1]


def test_published_split_keeps_files_as_published(tmp_path):
  ds = load.load_dataset(pairs_dataset(tmp_path, TOY, split="published", valid_inside_train=True))
  assert ds.train["buy"].nnz == 4


def test_validation_inside_train_is_leakage_unless_declared(tmp_path):
  with pytest.raises(DataError, match="validation pair.*leakage") as err:
    load.load_dataset(pairs_dataset(tmp_path, TOY, split="published"))
  assert err.value.path.endswith("valid.txt") and err.value.line == 1


def test_test_pair_in_training_target_is_leakage(tmp_path):
  files = dict(TOY, **{"test.txt": "1 3\n3 4\n"})
  with pytest.raises(DataError, match="test pair.*leakage") as err:
    load.load_dataset(pairs_dataset(tmp_path, files))
  assert err.value.path.endswith("test.txt") and err.value.line == 2


def test_id_out_of_range_names_file_and_line(tmp_path):
  files = dict(TOY, **{"view.txt": "1 1\n1 5\n"})
  with pytest.raises(DataError, match="id out of range: user 1, item 5") as err:
    load.load_dataset(pairs_dataset(tmp_path, files))
  assert err.value.path.endswith("view.txt") and err.value.line == 2


def test_id_below_base(tmp_path):
  files = dict(TOY, **{"buy.txt": "1 1\n0 3\n"})
  with pytest.raises(DataError, match="below the dataset's id base") as err:
    load.load_dataset(pairs_dataset(tmp_path, files))
  assert err.value.line == 2


def test_empty_behavior(tmp_path):
  files = dict(TOY, **{"view.txt": "\n"})
  with pytest.raises(DataError, match="behavior 'view' has no interactions"):
    load.load_dataset(pairs_dataset(tmp_path, files))


def test_missing_behavior_file_says_how_to_drop_it(tmp_path):
  files = {k: v for k, v in TOY.items() if k != "view.txt"}
  with pytest.raises(DatasetNotFoundError, match=r"view\.txt.*--config\.data\.behaviors=buy"):
    load.load_dataset(pairs_dataset(tmp_path, files))
  ds = load.load_dataset(pairs_dataset(tmp_path, files, behaviors="buy"))
  assert ds.behaviors == ("buy",)


def test_missing_folder_says_where_data_comes_from(tmp_path):
  data = pairs_dataset(tmp_path, TOY, subdir="taobao_mbcgcn")
  with pytest.raises(DatasetNotFoundError, match="hnt_jax.data.download taobao"):
    load.load_dataset(data)


def test_behaviors_must_end_with_target(tmp_path):
  with pytest.raises(ConfigError, match="must end with the target"):
    load.load_dataset(pairs_dataset(tmp_path, TOY, behaviors="buy,view"))


def test_count_file_declares_totals(tmp_path):
  files = dict(TOY, **{"count.txt": json.dumps({"user": 5, "item": 9})})
  ds = load.load_dataset(pairs_dataset(tmp_path, files, count_file="count.txt", n_users=0, n_items=0))
  assert (ds.n_users, ds.n_items) == (5, 9)


def test_totals_inferred_from_largest_id(tmp_path):
  ds = load.load_dataset(pairs_dataset(tmp_path, TOY, n_users=0, n_items=0))
  assert (ds.n_users, ds.n_items) == (3, 4)


def test_adjacency_format(tmp_path):
  files = {"view.txt": "0 0 1\n1 2\n2 3\n", "buy.txt": "0 0\n1 2 1\n2 3\n", "valid.txt": "",
           "test.txt": "0 2\n1 3\n"}
  ds = load.load_dataset(pairs_dataset(tmp_path, files, format="adjacency", id_base=0, valid_file="",
                                       split="published"))
  assert ds.train["buy"].toarray().tolist() == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]]
  assert ds.valid is None


def test_pickled_csr_format(tmp_path):
  folder = tmp_path / "toy"
  folder.mkdir()
  view = sp.csr_matrix(np.array([[1700000000, 0, 5], [0, 3, 0]], dtype=np.int64))
  buy = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]], dtype=np.int64))
  (folder / "trn_view").write_bytes(pickle.dumps(view))
  (folder / "trn_buy").write_bytes(pickle.dumps(buy))
  (folder / "tst_int").write_bytes(pickle.dumps([2, None]))
  data = pairs_dataset(tmp_path, {}, format="pickled_csr", id_base=0, valid_file="", test_file="tst_int",
                       n_users=0, n_items=0, split="published")
  data.files = dict(view="trn_view", buy="trn_buy")
  ds = load.load_dataset(data)
  assert (ds.n_users, ds.n_items) == (2, 3)
  assert ds.train["view"].toarray().tolist() == [[1, 0, 1], [0, 1, 0]]
  assert ds.test.toarray().tolist() == [[0, 0, 1], [0, 0, 0]]
  assert ds.info["users_without_test"] == 1


def test_second_load_comes_from_cache_and_cache_follows_content(tmp_path, monkeypatch):
  data = pairs_dataset(tmp_path, TOY)
  first = load.load_dataset(data)

  def fail(*a, **k):
    raise AssertionError("parsed the source again")

  with monkeypatch.context() as m:
    m.setattr(formats, "read_pairs", fail)
    second = load.load_dataset(data)
  for b in first.behaviors:
    assert (first.train[b] != second.train[b]).nnz == 0
  assert (first.test != second.test).nnz == 0 and first.info == second.info
  (tmp_path / "toy" / "view.txt").write_text("1 1\n")  # content changed: the cache must not be used
  assert load.load_dataset(data).train["view"].nnz == 1


def test_cache_is_written_under_cache_dir_not_beside_data(tmp_path):
  load.load_dataset(pairs_dataset(tmp_path, TOY, cache_dir=str(tmp_path / "cache")))
  assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == sorted(TOY)
  assert len(list((tmp_path / "cache").glob("toy-*.npz"))) == 1


NO_VALID = {
    "view.txt": "1 1\n1 2\n2 3\n3 4\n",
    "buy.txt": "1 1\n1 2\n1 4\n2 3\n3 4\n3 1\n",  # users 1 and 3 have several purchases, user 2 one
    "test.txt": "1 3\n2 4\n",
}


def test_without_a_validation_file_one_purchase_per_user_is_carved_out(tmp_path):
  ds = load.load_dataset(pairs_dataset(tmp_path, NO_VALID, valid_file="", n_items=4))
  full = load.load_dataset(pairs_dataset(tmp_path, NO_VALID, valid_file="", n_items=4, split="published"))
  assert full.valid is None and full.train["buy"].nnz == 6
  valid = ds.valid.toarray()
  assert valid.sum(axis=1).tolist() == [1, 0, 1]  # user 2 keeps its only purchase for training
  assert (ds.train["buy"].toarray() + valid == full.train["buy"].toarray()).all()  # carved, not added
  assert ds.info["heldout_from_train"] == 2 and ds.info["valid_carved_seed"] == 0
  assert not ds.valid.multiply(ds.test).nnz and (ds.test != full.test).nnz == 0


@pytest.mark.parametrize("files", ["TOY", "NO_VALID"])  # a validation file, or the carve
def test_holdout_behaviors_all_removes_validation_pairs_from_every_behavior(tmp_path, files):
  """`data.holdout_behaviors=all`: a validation pair leaves the user's auxiliary behaviors too (the user
  keeps no training interaction with the item, as some test splits have none); `target` keeps them."""
  files = dict(TOY if files == "TOY" else NO_VALID)
  files["view.txt"] = "1 3\n3 2\n" + files["buy.txt"]  # every purchase was viewed, and two other pairs
  valid_file = "valid.txt" if "valid.txt" in files else ""
  kept = load.load_dataset(pairs_dataset(tmp_path, files, valid_file=valid_file))
  ds = load.load_dataset(pairs_dataset(tmp_path, files, valid_file=valid_file, holdout_behaviors="all"))
  valid = ds.valid.toarray() > 0
  assert (valid == (kept.valid.toarray() > 0)).all() and valid.sum() == (1 if valid_file else 2)
  view, view_kept = ds.train["view"].toarray() > 0, kept.train["view"].toarray() > 0
  assert view_kept[valid].all() and not view[valid].any()
  assert (view == (view_kept & ~valid)).all()  # nothing else removed
  assert ds.info["heldout_from_auxiliary"] == {"view": int(valid.sum())}
  assert (ds.train["buy"] != kept.train["buy"]).nnz == 0 and (ds.test != kept.test).nnz == 0


def test_holdout_behaviors_all_that_empties_a_behavior_names_its_file(tmp_path):
  files = {**TOY, "view.txt": "2 2\n"}  # every view is of the validation pair
  with pytest.raises(DataError, match=r"view\.txt: behavior 'view' is empty once validation pairs are held out "
                                     r"of every behavior"):
    load.load_dataset(pairs_dataset(tmp_path, files, holdout_behaviors="all"))


def test_carving_is_seeded_and_uniform_over_the_users_purchases():
  import scipy.sparse as sp
  from hnt_jax.data import validate
  rng = np.random.default_rng(0)
  target = sp.csr_matrix((rng.random((300, 8)) < 0.5).astype(np.float32))
  a, b = validate.carve_validation(target, 0), validate.carve_validation(target, 0)
  assert (a != b).nnz == 0 and (a != validate.carve_validation(target, 1)).nnz > 0
  assert not (a - a.multiply(target)).nnz  # every carved pair is a training pair
  degree = np.diff(target.indptr)
  assert np.array_equal(np.diff(a.indptr), (degree >= 2).astype(int))
  # each of a user's items is as likely: over many seeds the picks of one user spread over all of them
  user = int(np.argmax(degree))
  picks = {int(validate.carve_validation(target, s)[user].indices[0]) for s in range(200)}
  assert picks == set(target[user].indices.tolist())
