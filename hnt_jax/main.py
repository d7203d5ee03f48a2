"""hnt_jax command line.

  python -m hnt_jax.main --config configs/taobao.py [--workdir runs/taobao] [--config.key=value ...]
  python -m hnt_jax.main --config configs/synthetic.py --mode stats
"""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from hnt_jax import config as config_lib
from hnt_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results (default: "
                                "runs/<dataset>/<model>-<time> under the current folder).")
_MODE = flags.DEFINE_enum("mode", cli.MODES[0], list(cli.MODES), "What to do with the configured run.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  sys.exit(cli.run_mode(_CONFIG.value, _WORKDIR.value, mode=_MODE.value))


if __name__ == "__main__":
  cli.main_with_clean_errors(lambda: (config_lib.check_command_line(sys.argv[1:]), app.run(main)))
