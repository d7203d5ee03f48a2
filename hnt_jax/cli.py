"""The command line's modes behind one `run_mode(config, workdir, mode)` call, and the clean one-line exit for
bad input that every command-line tool uses (`main_with_clean_errors`)."""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Optional

import ml_collections

from hnt_jax.errors import ConfigError, InputError

MODES = ("train", "stats")  # the first is the default


def run_mode(config: ml_collections.ConfigDict, workdir: Optional[str], mode: Optional[str] = None) -> int:
  """Runs `mode` (default: the first of MODES); returns a process exit status."""
  mode = mode or MODES[0]
  if mode not in MODES:
    raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
  if mode == "stats":
    return stats(config)
  return train(config, workdir)


def stats(config) -> int:
  """Loads the dataset, builds its graphs and prints the statistics table."""
  from hnt_jax.config_checks import validate
  from hnt_jax.data.dataset import format_statistics, statistics
  from hnt_jax.data.load import load_dataset
  from hnt_jax.train.setup import graphs_from_config

  validate(config)
  ds = load_dataset(config.data)
  graphs = graphs_from_config(config, ds)
  print(format_statistics(statistics(ds)))
  edges = ", ".join(f"{b} {g.adj.nse:,}" for b, g in zip(graphs.behaviors, graphs.per_behavior))
  print(f"- graphs: {ds.n_users + ds.n_items:,} nodes; adjacency entries per behavior: {edges}")
  return 0


def train(config, workdir: Optional[str]) -> int:
  """Trains (or resumes) and evaluates the configured model; prints the test metrics."""
  from hnt_jax.train.loop import TrainingDiverged, train_and_evaluate

  if not workdir:
    workdir = default_workdir(config)
    print(f"workdir: {workdir} (to resume this run: --workdir {workdir})")
  try:
    results = train_and_evaluate(config, workdir)
  except TrainingDiverged as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  from hnt_jax import distributed
  if distributed.is_main_process():  # the other processes of a run print nothing
    print(format_results(results))
    print(f"results: {workdir}/results.json")
  return 0


def default_workdir(config, root: str = "runs") -> str:
  """`runs/<dataset>/<model>-<YYYYmmdd-HHMMSS>` under the current folder: where a run goes without
  --workdir. Several processes of one run cannot agree on a clock reading, so they must name it."""
  import time

  from hnt_jax import distributed
  if distributed.multi_process_environment():
    raise ConfigError("a run of several processes needs --workdir DIR, the same folder for every process")
  stamp = time.strftime("%Y%m%d-%H%M%S")
  return os.path.join(root, str(config.data.name), f"{config.model.name}-{stamp}")


def format_results(results: dict) -> str:
  """One Markdown table of the test metrics in results.json."""
  test = results.get("test", {})
  ks = sorted({int(k.split("@")[1]) for k in test if k.startswith("hr@")})
  head = "| group | users | " + " | ".join(f"HR@{k} | NDCG@{k}" for k in ks) + " |"
  lines = [f"{results['model']} on {results['dataset']} ({results['protocol']} protocol, split "
           f"{results['split']}), best epoch {results['best_epoch']}:", "", head,
           "|---|---:|" + "---:|---:|" * len(ks)]
  for group, prefix in (("all", ""), ("observed", "observed/"), ("unobserved", "unobserved/")):
    if not ks or f"{prefix}hr@{ks[0]}" not in test:
      continue
    cells = " | ".join(f"{test[f'{prefix}hr@{k}']:.4f} | {test[f'{prefix}ndcg@{k}']:.4f}" for k in ks)
    lines.append(f"| {group} | {test[f'{prefix}users']:,} | {cells} |")
  return "\n".join(lines)


def main_with_clean_errors(fn: Callable[[], None]) -> None:
  """Runs `fn`; bad input, and a file or folder that cannot be read or written, end the process with one
  line (exit status 2), not a traceback."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # library INFO chatter (checkpoint I/O, no-TPU probe)
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  try:
    fn()
  except (InputError, ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except OSError as e:  # permissions, a full disk, a file where a folder should be
    where = f"{e.filename}: " if e.filename else ""
    print(f"error: {where}{e.strerror or e}", file=sys.stderr)
    sys.exit(2)
