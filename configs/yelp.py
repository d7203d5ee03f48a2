"""Multi-behavior Yelp as shipped by KHGT / MATN: tip -> dislike -> neutral -> like, "pickled csr", 0-based.

Files trn_tip, trn_neg, trn_neutral, trn_pos (target: like = trn_pos) and tst_int (test item per user or
None). Place them in <data dir>/yelp.

The default split, `holdout_valid`, carves one training purchase of every user with two or more out as the
validation split (drawn with `data.holdout_seed`), so early stopping and the experiment runner's grid work
here too; `--config.data.split=published` trains on every purchase as shipped.
"""
from hnt_jax.config import base_config


def get_config():
  config = base_config()
  data = config.data
  data.name = "yelp"
  data.format = "pickled_csr"
  data.subdir = "yelp"
  data.behaviors = "tip,dislike,neutral,like"
  data.target = "like"
  data.files = dict(tip="trn_tip", dislike="trn_neg", neutral="trn_neutral", like="trn_pos")
  data.valid_file = ""
  data.test_file = "tst_int"
  data.id_base = 0
  config.eval.protocol = "sampled"  # this lineage ranks the held-out item against 99 sampled items
  return config
