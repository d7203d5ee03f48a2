"""JData as shipped by CRGCN: view -> collect -> cart -> buy, "pairs" format with count.txt, 1-based ids.

Place buy.txt, cart.txt, collect.txt, view.txt, validation.txt, test.txt and count.txt in <data dir>/jdata.
"""
from hnt_jax.config import base_config


def get_config():
  config = base_config()
  data = config.data
  data.name = "jdata"
  data.format = "pairs"
  data.subdir = "jdata"
  data.behaviors = "view,collect,cart,buy"
  data.target = "buy"
  data.files = dict(view="view.txt", collect="collect.txt", cart="cart.txt", buy="buy.txt")
  data.valid_file = "validation.txt"
  data.test_file = "test.txt"
  data.count_file = "count.txt"
  data.id_base = 1
  data.split = "holdout_valid"
  return config
