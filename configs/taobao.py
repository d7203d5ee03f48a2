"""Taobao as used by MB-CGCN / MuLe (`taobao_mbcgcn`): view -> cart -> buy, "pairs" format, 1-based ids.

valid.txt is a subset of buy.txt as published. The default split `holdout_valid` removes it from the
training target so that model selection is clean; `--config.data.split=published` reads the files exactly
as published (the protocol behind the published numbers).
"""
from hnt_jax.config import base_config


def get_config():
  config = base_config()
  data = config.data
  data.name = "taobao"
  data.format = "pairs"
  data.subdir = "taobao_mbcgcn"
  data.behaviors = "view,cart,buy"
  data.target = "buy"
  data.files = dict(view="view.txt", cart="cart.txt", buy="buy.txt")
  data.valid_file = "valid.txt"
  data.test_file = "test.txt"
  data.n_users = 15449
  data.n_items = 11953
  data.id_base = 1
  data.split = "holdout_valid"
  data.valid_inside_train = True
  return config
