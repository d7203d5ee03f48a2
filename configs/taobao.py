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
  exp = config.experiments
  exp.grid = "train.learning_rate=0.001,0.01"
  exp.published = ("lightgcn=0.0411/0.0240; crgcn=0.0855/0.0439; mbcgcn=0.1233/0.0677; PKEF=0.1385/0.0785; "
                   "MB-HGCN=0.1299/0.0690; MuLe=0.1918/0.1103")
  exp.published_source = ("as listed in the dataset README (full ranking, training purchases masked; MuLe "
                          "trained on all of buy.txt for a fixed 100 epochs without validation)")
  return config
