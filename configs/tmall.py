"""Tmall as shipped by CRGCN: click -> collect -> cart -> buy, "pairs" format with count.txt, 1-based ids.

validation.txt and test.txt hold several items per user and are disjoint from buy.txt.

  --config configs/tmall.py           the full CRGCN Tmall in <data dir>/tmall
  --config configs/tmall.py:noclick   the copy without click.txt (<data dir>/tmall_crgcn_partial_noclick):
                                      collect -> cart -> buy; it cannot reproduce published Tmall numbers.
"""
from hnt_jax.config import base_config


def get_config(variant: str = ""):
  config = base_config()
  data = config.data
  data.name = "tmall"
  data.format = "pairs"
  data.subdir = "tmall"
  data.behaviors = "click,collect,cart,buy"
  data.target = "buy"
  data.files = dict(click="click.txt", collect="collect.txt", cart="cart.txt", buy="buy.txt")
  data.valid_file = "validation.txt"
  data.test_file = "test.txt"
  data.count_file = "count.txt"
  data.id_base = 1
  data.split = "holdout_valid"
  if variant == "noclick":
    data.name = "tmall_noclick"
    data.subdir = "tmall_crgcn_partial_noclick"
    data.behaviors = "collect,cart,buy"
  elif variant:
    raise ValueError(f"configs/tmall.py: unknown variant {variant!r}; use configs/tmall.py or "
                     "configs/tmall.py:noclick")
  return config
