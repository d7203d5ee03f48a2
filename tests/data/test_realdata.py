"""The public datasets load with the counts their READMEs publish (skipped when the data is absent)."""
import subprocess
import sys

import numpy as np
import pytest

from hnt_jax.data.dataset import format_statistics, statistics
from hnt_jax.data.load import load_dataset
from tests.conftest import REPO, load_config

pytestmark = pytest.mark.realdata


def load(name, data_dir, arg="", **overrides):
  config = load_config(name, arg)
  config.data.dir = str(data_dir)
  for k, v in overrides.items():
    config.data[k] = v
  return load_dataset(config.data)


def test_taobao_published_counts(data_dir):
  ds = load("taobao.py", data_dir, split="published")
  s = statistics(ds)
  assert (s["users"], s["items"]) == (15449, 11953)
  assert {b: v["pairs"] for b, v in s["behaviors"].items()} == dict(view=873954, cart=195476, buy=92180)
  assert {b: v["items"] for b, v in s["behaviors"].items()} == dict(view=11938, cart=11031, buy=11844)
  assert s["test"]["pairs"] == 15449 and s["valid"]["pairs"] == 15449
  assert round(s["test"]["observed_in"]["view"], 3) == 0.819
  assert round(s["test"]["observed_in"]["cart"], 3) == 0.219
  assert all(v["duplicates"] == 0 for v in s["behaviors"].values())


def test_taobao_training_purchases_are_touched_as_often_as_the_held_out_items(data_dir):
  s = statistics(load("taobao.py", data_dir))
  assert round(s["train_target_observed"], 3) == 0.844 and round(s["valid"]["observed_in"]["any"], 3) == 0.855
  assert s["valid"]["unseen_purchases"] == 0.0 and "unseen_purchases" not in s["test"]


def test_taobao_holdout_valid_removes_validation_from_training(data_dir):
  ds = load("taobao.py", data_dir)
  assert ds.train["buy"].nnz == 92180 - 15449
  assert ds.train["buy"].multiply(ds.valid).nnz == 0
  assert ds.info["heldout_from_train"] == 15449


def test_tmall_noclick_counts(data_dir):
  ds = load("tmall.py", data_dir, "noclick")
  s = statistics(ds)
  assert (s["users"], s["items"]) == (41738, 11953)
  assert {b: v["pairs"] for b, v in s["behaviors"].items()} == dict(collect=221514, cart=1996, buy=181428)
  assert {b: v["users"] for b, v in s["behaviors"].items()} == dict(collect=26023, cart=1199, buy=40159)
  assert s["valid"]["pairs"] == 74158 and s["valid"]["users"] == 41314
  assert s["test"]["pairs"] == 31572 and s["test"]["users"] == 29310
  assert round(s["test"]["observed_in"]["collect"], 3) == 0.100
  # several ground-truth items per user
  assert np.diff(ds.valid.indptr).max() == 25 and np.diff(ds.test.indptr).max() == 12


def test_tmall_with_click_names_the_missing_file(data_dir):
  from hnt_jax.errors import DatasetNotFoundError
  with pytest.raises(DatasetNotFoundError, match=r"click\.txt.*behaviors=collect,cart,buy"):
    load("tmall.py", data_dir, subdir="tmall_crgcn_partial_noclick")


def test_retailrocket_counts(data_dir):
  ds = load("retailrocket.py", data_dir, split="published")
  s = statistics(ds)
  assert (s["users"], s["items"]) == (2174, 30113)
  assert {b: v["pairs"] for b, v in s["behaviors"].items()} == dict(view=75374, cart=12456, buy=9551)
  assert s["test"]["pairs"] == 2174 and s["test"]["observed_in"]["any"] == 0.0
  carved = load("retailrocket.py", data_dir)  # the default: one validation purchase per user carved out
  several = int((np.diff(ds.train_target.indptr) >= 2).sum())
  assert carved.valid.nnz == several and carved.train_target.nnz == 9551 - several
  assert not carved.valid.multiply(carved.test).nnz and (carved.test != ds.test).nnz == 0
  # like the test items, the carved ones are left with no training interaction of their user (the config's
  # data.holdout_behaviors=all); kept in the auxiliary behaviors, 95% of them were viewed or carted
  assert statistics(carved)["valid"]["observed_in"]["any"] == 0.0
  kept = load("retailrocket.py", data_dir, holdout_behaviors="target")
  assert statistics(kept)["valid"]["observed_in"]["any"] > 0.9
  assert sum(carved.info["heldout_from_auxiliary"].values()) > 0.9 * several
  table = format_statistics(statistics(carved))
  assert "held out of the auxiliary behaviors (data.holdout_behaviors=all): view " in table
  assert "- valid: " in table and "held-out items observed in: view 0.0%, cart 0.0%, any 0.0%" in table
  # 97.5% of the training purchases were touched, none of the carved items: every purchase scored unseen
  assert round(statistics(carved)["train_target_observed"], 3) == 0.975
  assert statistics(carved)["valid"]["unseen_purchases"] == 1.0 and "unseen_purchases for this mix: 1.00" in table


def test_stats_mode_prints_published_counts(data_dir):
  out = subprocess.run([sys.executable, "-m", "hnt_jax.main", "--config", "configs/taobao.py", "--mode",
                        "stats", "--config.data.split=published", f"--config.data.dir={data_dir}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert "| view | 873,954 |" in out.stdout and "| buy | 92,180 |" in out.stdout
  assert "view 81.9%" in out.stdout
