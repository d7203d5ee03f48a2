"""Shared defaults for every hnt_jax run (the full schema lives in `hnt_jax/config.py`).

Dataset configs start from these defaults and override the `data` block and anything else that differs.
Any key can be overridden on the command line, e.g. `--config.model.embed_dim=128`; a key that does not
exist is an error.
"""
from hnt_jax.config import base_config


def get_config():
  return base_config()
