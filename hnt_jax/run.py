"""What each command-line mode does, behind one `run(config, workdir)` call."""
from __future__ import annotations

import logging
import sys
from typing import Callable, Optional

import ml_collections

from hnt_jax.data.errors import ConfigError, DataError

MODES = ("stats",)  # the first is the default


def run(config: ml_collections.ConfigDict, workdir: Optional[str], mode: Optional[str] = None) -> int:
  """Runs `mode` (default: the first of MODES); returns a process exit status."""
  mode = mode or MODES[0]
  if mode not in MODES:
    raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
  return stats(config)


def stats(config) -> int:
  """Loads the dataset, builds its graphs and prints the statistics table."""
  from hnt_jax.data.dataset import format_statistics, statistics
  from hnt_jax.data.load import load_dataset
  from hnt_jax.graph import build_graphs

  ds = load_dataset(config.data)
  graphs = build_graphs(ds)
  print(format_statistics(statistics(ds)))
  edges = ", ".join(f"{b} {g.adj.nse:,}" for b, g in zip(graphs.behaviors, graphs.per_behavior))
  print(f"- graphs: {ds.n_users + ds.n_items:,} nodes; adjacency entries per behavior: {edges}")
  return 0


def main_with_clean_errors(fn: Callable[[], None]) -> None:
  """Runs `fn`; bad input ends the process with its message, not a traceback."""
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "no TPU found" noise
  try:
    fn()
  except (DataError, ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
