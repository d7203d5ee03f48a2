"""Built-in synthetic data with planted hesitations and noise edges (no files needed).

  python -m hnt_jax.main --config configs/synthetic.py --workdir /tmp/hnt_synth
  python -m hnt_jax.main --config configs/synthetic.py --config.data.synthetic.n_users=100000 ...
"""
from hnt_jax.config import base_config


def get_config():
  config = base_config()
  config.data.name = "synthetic"
  config.data.format = "synthetic"
  config.data.behaviors = "view,cart,buy"
  config.data.target = "buy"
  # a small graph: smaller batches so an epoch has several steps
  config.train.batch_size = 512
  config.train.learning_rate = 5e-3
  config.train.epochs = 40
  config.train.eval_every = 5
  return config
