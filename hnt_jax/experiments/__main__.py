"""python -m hnt_jax.experiments --config configs/taobao.py --out DIR [--models ...] [--seeds 3]
[--protocol clean|published] [--jobs N] [--config.key=value ...]"""
from __future__ import annotations

import os
import sys

from hnt_jax.experiments.processes import run_in_processes, model_command
from hnt_jax.experiments.runner import PROTOCOLS, Experiment
from hnt_jax.experiments.summary import format_summary


def main_cli():
  from absl import app, flags
  from ml_collections import config_flags

  from hnt_jax import config as config_lib
  from hnt_jax.cli import main_with_clean_errors

  config = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).")
  models = flags.DEFINE_string("models", "hnt,hnt_no_hes,hnt_no_nt,heuristic,mf,lightgcn,lightgcn_g,crgcn,mbcgcn",
                               "Comma-separated model names (registry names and hnt_no_hes/no_nt/no_both).")
  seeds = flags.DEFINE_integer("seeds", 3, "Seeds per model (config.seed, config.seed + 1, ...).")
  protocol = flags.DEFINE_enum("protocol", "clean", list(PROTOCOLS), "Protocol preset.")
  out = flags.DEFINE_string("out", None, "Experiment folder.")
  jobs = flags.DEFINE_integer("jobs", 1, "Models run in parallel processes (e.g. several on one GPU).")
  write_summary = flags.DEFINE_bool("summary", True, "Write the summary files after the runs.")
  flags.mark_flags_as_required(["config", "out"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    names = [m.strip() for m in models.value.split(",") if m.strip()]
    experiment = Experiment(config.value, out.value, names, seeds.value, protocol.value)
    if jobs.value > 1 and len(names) > 1:
      try:
        run_in_processes({m: model_command(sys.argv[1:], m) for m in names}, jobs.value, experiment.root)
      except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    summary = experiment.run(write_summary=write_summary.value)  # every run is finished by now if jobs > 1
    if summary is None:
      return
    print(format_summary(summary))
    print(f"\nwritten: {os.path.join(out.value, protocol.value)}/summary.md, summary.json, summary.png")

  main_with_clean_errors(lambda: (config_lib.check_command_line(sys.argv[1:]), app.run(main)))


if __name__ == "__main__":
  main_cli()
