"""Runs (or resumes) every model x seed of one protocol, at the grid point chosen on validation."""
from __future__ import annotations

import itertools
import math
import os
import re
from typing import Any, Callable, Optional, Sequence

from hnt_jax import report
from hnt_jax.config import apply_overrides, parse_value
from hnt_jax.errors import ConfigError
from hnt_jax.experiments import summary as summary_lib
from hnt_jax.models import REGISTRY, get_model
from hnt_jax.train.records import read_json, write_json

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "hnt_no_hes": ("hnt", {"model.hnt.use_hesitation": False}),
    "hnt_no_nt": ("hnt", {"model.hnt.use_negative_transfer": False}),
    "hnt_no_both": ("hnt", {"model.hnt.use_hesitation": False, "model.hnt.use_negative_transfer": False}),
}
PROTOCOLS = ("clean", "published")


def model_overrides(name: str) -> dict[str, Any]:
  """Config overrides that select model `name` (a registry name or an HNT ablation)."""
  if name in VARIANTS:
    base, extra = VARIANTS[name]
    return {"model.name": base, **extra}
  if name in REGISTRY:
    return {"model.name": name}
  raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(set(REGISTRY) | set(VARIANTS)))}")


def protocol_overrides(config, protocol: str) -> dict[str, Any]:
  if protocol == "clean":
    return {"data.split": "holdout_valid"}
  if protocol == "published":
    return {"data.split": "published", "data.valid_file": "", "train.validate": False, "train.patience": 0,
            "train.epochs": int(config.experiments.published_epochs)}
  raise ConfigError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")


def parse_grid(spec: str) -> list[dict[str, Any]]:
  """"a.b=1,2;c=x" -> [{a.b: 1, c: x}, {a.b: 2, c: x}] (values parsed as numbers/booleans when they are)."""
  axes = []
  for part in (p.strip() for p in str(spec).split(";")):
    if not part:
      continue
    key, sep, values = part.partition("=")
    if not sep or not values.strip():
      raise ConfigError(f"experiments.grid entry {part!r} must look like key=value1,value2")
    axes.append([(key.strip(), parse_value(v.strip())) for v in values.split(",")])
  return [dict(point) for point in itertools.product(*axes)] or [{}]


def parse_published(spec: str) -> dict[str, dict[str, float]]:
  """"lightgcn=0.0411/0.0240; crgcn=..." -> {model: {"hr@10": .., "ndcg@10": ..}}."""
  out = {}
  for part in (p.strip() for p in str(spec).split(";")):
    if not part:
      continue
    m = re.fullmatch(r"([\w\-. ]+)=([0-9.]+)/([0-9.]+)", part)
    if not m:
      raise ConfigError(f"experiments.published entry {part!r} must look like model=HR@10/NDCG@10")
    out[m.group(1).strip()] = {"hr@10": float(m.group(2)), "ndcg@10": float(m.group(3))}
  return out


class Experiment:
  """Runs (or resumes) every model x seed of one protocol into `out/<protocol>` and writes the summary."""

  def __init__(self, config, out: str, models: Sequence[str], seeds: int, protocol: str = "clean",
               train_fn: Optional[Callable[[Any, str], dict]] = None, log: Callable[[str], None] = print):
    for m in models:
      model_overrides(m)
    if seeds < 1:
      raise ConfigError("--seeds must be at least 1")
    self.config, self.models, self.seeds, self.protocol = config, list(models), int(seeds), protocol
    self.root = os.path.join(out, protocol)
    self.grid = parse_grid(config.experiments.grid)
    self.log = log
    if train_fn is None:
      from hnt_jax.train.loop import train_and_evaluate
      train_fn = train_and_evaluate
    self.train_fn = train_fn
    self.base = apply_overrides(config, protocol_overrides(config, protocol))

  # --- running -----------------------------------------------------------------------------------------

  def _trainable(self, model: str) -> bool:
    """Models without parameters (the heuristic) run once, with no grid and no seeds."""
    cfg = apply_overrides(self.base, model_overrides(model))
    return get_model(cfg.model, 1, 1, len(str(cfg.data.behaviors).split(","))).trainable

  def _workdir(self, model: str, point: dict, seed: int) -> str:
    return os.path.join(self.root, model, summary_lib.point_tag(point), f"s{seed}")

  def _run(self, model: str, point: dict, seed: int) -> dict:
    workdir = self._workdir(model, point, seed)
    done = os.path.join(workdir, "results.json")
    if os.path.exists(done):
      return read_json(done)
    config = apply_overrides(self.base, {**model_overrides(model), **point, "seed": seed})
    self.log(f"[{self.protocol}] {model} {summary_lib.point_tag(point)} seed {seed} -> {workdir}")
    return self.train_fn(config, workdir)

  def _chosen_point(self, model: str, first_seed: int) -> tuple[dict, dict, str]:
    """(grid point, {tag: validation metric}, how the point was chosen) for `model`."""
    if not self._trainable(model):
      return {}, {}, "no parameters"
    if len(self.grid) == 1:
      return self.grid[0], {}, "the only grid point"
    if self.protocol == "published":
      return self._point_from_clean(model)
    select = self.config.train.select_metric
    scores = {}
    for point in self.grid:
      result = self._run(model, point, first_seed)
      scores[summary_lib.point_tag(point)] = result.get("valid", {}).get(select, -math.inf)
    best = max(self.grid, key=lambda p: scores[summary_lib.point_tag(p)])
    return best, scores, "validation"

  def _point_from_clean(self, model: str) -> tuple[dict, dict, str]:
    path = os.path.join(os.path.dirname(self.root), "clean", "summary.json")
    if os.path.exists(path):
      chosen = read_json(path)["models"].get(model, {}).get("best_params")
      if chosen is not None:
        return chosen, {}, "clean protocol"
    self.log(f"[published] {model}: no clean summary to take the grid point from; using "
             f"{summary_lib.point_tag(self.grid[0])}")
    return self.grid[0], {}, summary_lib.NO_CLEAN_CHOICE

  def run(self, write_summary: bool = True) -> Optional[dict]:
    first = int(self.config.seed)
    rows, workdirs = {}, []
    for model in self.models:
      point, scores, chosen_by = self._chosen_point(model, first)
      seeds = [first + s for s in range(self.seeds)] if self._trainable(model) else [first]
      results = [self._run(model, point, seed) for seed in seeds]
      workdirs += [self._workdir(model, point, seed) for seed in seeds]
      rows[model] = {**summary_lib.summarize(results, point, scores), "chosen_by": chosen_by}
    if not write_summary:
      return None
    summary = self._summary(rows)
    os.makedirs(self.root, exist_ok=True)
    write_json(os.path.join(self.root, "summary.json"), summary)
    with open(os.path.join(self.root, "summary.md"), "w") as f:
      f.write(summary_lib.format_summary(summary) + "\n" + curve_section(workdirs))
    summary_lib.bar_chart(summary, os.path.join(self.root, "summary.png"))
    return summary

  def _summary(self, rows: dict) -> dict:
    cfg = self.config
    published = {}
    if self.protocol == cfg.experiments.published_protocol:
      published = parse_published(cfg.experiments.published)
    return {"dataset": cfg.data.name, "protocol": self.protocol,
            "protocol_description": describe_protocol(self.base, self.protocol),
            "select_metric": cfg.train.select_metric, "grid": cfg.experiments.grid, "seeds": self.seeds,
            "models": rows, "published": published,
            "published_source": cfg.experiments.published_source if published else "",
            "improvement": summary_lib.improvement(rows)}


def curve_section(workdirs: Sequence[str]) -> str:
  """summary.md's table of how far the table's runs' validation curves fall below their best
  (`report.curve_table`), from the workdirs' metric histories; "" when no run has two evaluations."""
  runs = [report.load_run(w) for w in workdirs
          if all(os.path.exists(os.path.join(w, f)) for f in ("results.json", "config.json", "metrics.jsonl"))]
  table = report.curve_table(runs)
  if not table:
    return ""
  return ("\n## Validation curves\n\nHow far each setting's validation curves fall below their best after "
          "reaching it, from the runs' metrics.jsonl (`python -m hnt_jax.report` prints the same table and "
          "plots the curves).\n\n" + table + "\n")


def describe_protocol(config, protocol: str) -> str:
  if protocol == "clean":
    return (f"clean: validation held out of training ({config.data.split}), early stopping and grid choice on "
            f"validation {config.train.select_metric}, test metrics of the best validation checkpoint")
  return (f"published: all target pairs as published train ({config.data.split}), no validation, fixed "
          f"{config.train.epochs} epochs, test metrics of the last epoch")


