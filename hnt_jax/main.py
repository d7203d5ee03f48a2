"""hnt_jax command line.

  python -m hnt_jax.main --config configs/taobao.py --workdir runs/taobao [--config.key=value ...]
  python -m hnt_jax.main --config configs/synthetic.py --mode stats
"""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from hnt_jax import config as config_lib
from hnt_jax import run

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_MODE = flags.DEFINE_enum("mode", run.MODES[0], list(run.MODES), "What to do with the configured run.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  sys.exit(run.run(_CONFIG.value, _WORKDIR.value, mode=_MODE.value))


def _check_command_line():
  """Unknown config keys and ill-typed values end with one clear line, before absl parses them."""
  spec, overrides = config_lib.overrides_from_argv(sys.argv[1:])
  if spec:
    config_lib.check_overrides(config_lib.load_config_file(spec), overrides)


if __name__ == "__main__":
  run.main_with_clean_errors(lambda: (_check_command_line(), app.run(main)))
