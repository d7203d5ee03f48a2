"""Beibei as shipped by GHCF / MBSSL: pv -> cart -> buy, "adjacency lists" (`user item1 item2 ...`), 0-based.

Files pv.txt, cart.txt, train.txt (buy) and test.txt (`user item` pairs). Place them in <data dir>/beibei.

The default split, `holdout_valid`, carves one training purchase of every user with two or more out as the
validation split (drawn with `data.holdout_seed`), so early stopping and the experiment runner's grid work
here too; `--config.data.split=published` trains on every purchase as shipped.
"""
from hnt_jax.config import base_config


def get_config():
  config = base_config()
  data = config.data
  data.name = "beibei"
  data.format = "adjacency"
  data.subdir = "beibei"
  data.behaviors = "pv,cart,buy"
  data.target = "buy"
  data.files = dict(pv="pv.txt", cart="cart.txt", buy="train.txt")
  data.valid_file = ""
  data.test_file = "test.txt"
  data.id_base = 0
  return config
