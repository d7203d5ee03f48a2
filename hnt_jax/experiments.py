"""Paper-style comparison tables in one command: every model x seed, a small grid chosen on validation.

  python -m hnt_jax.experiments --config configs/taobao.py --out runs/exp_taobao \
      --models hnt,hnt_no_hes,hnt_no_nt,heuristic,mf,lightgcn,lightgcn_g,crgcn,mbcgcn --seeds 3 \
      --protocol clean|published [--jobs N] [--config.key=value ...]

Layout: OUT/<protocol>/<model>/<grid point>/s<seed>/ is one run's workdir. Finished runs are skipped,
interrupted ones resume, so the same command continues an experiment. Then OUT/<protocol>/summary.md,
summary.json and summary.png.

* Models: any registry name (`mf`, `lightgcn`, `lightgcn_g`, `heuristic`, `crgcn`, `mbcgcn`, `hnt`) and the
  HNT ablations `hnt_no_hes`, `hnt_no_nt`, `hnt_no_both`.
* Grid (`experiments.grid`, e.g. "train.learning_rate=0.001,0.01;model.l2=0.0001,0.001"): the same points
  for every trainable model. Under `clean` each point is trained with the first seed, the point with the best
  validation `train.select_metric` is kept, and the other seeds run at it. Test metrics never choose anything.
* Protocols: `clean` holds `valid.txt` out of training and selects on it; `published` trains on all target
  pairs as published for a fixed `experiments.published_epochs` epochs with no validation (the protocol of
  published numbers), at the grid point `clean` chose when its summary exists (else the defaults). Published
  numbers (`experiments.published`) appear only in the `published` summary, never beside `clean` numbers.
"""
from __future__ import annotations

import collections
import copy
import itertools
import json
import math
import os
import re
import statistics
import sys
from typing import Any, Callable, Optional, Sequence

import ml_collections

from hnt_jax.data.errors import ConfigError
from hnt_jax.models import REGISTRY, get_model

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "hnt_no_hes": ("hnt", {"model.use_hesitation": False}),
    "hnt_no_nt": ("hnt", {"model.use_negative_transfer": False}),
    "hnt_no_both": ("hnt", {"model.use_hesitation": False, "model.use_negative_transfer": False}),
}
PROTOCOLS = ("clean", "published")
NO_CLEAN_CHOICE = "first grid point (no clean summary)"
METRICS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "hr@50", "ndcg@50")
GROUP_METRICS = ("hr@10", "ndcg@10")


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
    axes.append([(key.strip(), _parse_value(v.strip())) for v in values.split(",")])
  return [dict(point) for point in itertools.product(*axes)] or [{}]


def _parse_value(text: str) -> Any:
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


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


def point_tag(point: dict[str, Any]) -> str:
  if not point:
    return "default"
  return "_".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(point.items()))


def apply(config, overrides: dict[str, Any]):
  """A copy of `config` with dotted-key overrides (an unknown key or a wrong type is a ConfigError)."""
  config = copy.deepcopy(config)
  with config.unlocked():
    for dotted, value in overrides.items():
      node, keys = config, dotted.split(".")
      for k in keys[:-1]:
        if k not in node or not isinstance(node[k], ml_collections.ConfigDict):
          raise ConfigError(f"config key {dotted!r} does not exist")
        node = node[k]
      if keys[-1] not in node:
        raise ConfigError(f"config key {dotted!r} does not exist")
      try:
        node[keys[-1]] = value
      except TypeError as e:
        raise ConfigError(f"config key {dotted!r}: {e}") from None
  return config


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
    self.base = apply(config, protocol_overrides(config, protocol))

  # --- running -----------------------------------------------------------------------------------------

  def _trainable(self, model: str) -> bool:
    """Models without parameters (the heuristic) run once, with no grid and no seeds."""
    cfg = apply(self.base, model_overrides(model))
    return get_model(cfg.model, 1, 1, len(str(cfg.data.behaviors).split(","))).trainable

  def _run(self, model: str, point: dict, seed: int) -> dict:
    workdir = os.path.join(self.root, model, point_tag(point), f"s{seed}")
    done = os.path.join(workdir, "results.json")
    if os.path.exists(done):
      with open(done) as f:
        return json.load(f)
    config = apply(self.base, {**model_overrides(model), **point, "seed": seed})
    self.log(f"[{self.protocol}] {model} {point_tag(point)} seed {seed} -> {workdir}")
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
      scores[point_tag(point)] = result.get("valid", {}).get(select, -math.inf)
    best = max(self.grid, key=lambda p: scores[point_tag(p)])
    return best, scores, "validation"

  def _point_from_clean(self, model: str) -> tuple[dict, dict, str]:
    path = os.path.join(os.path.dirname(self.root), "clean", "summary.json")
    if os.path.exists(path):
      with open(path) as f:
        chosen = json.load(f)["models"].get(model, {}).get("best_params")
      if chosen is not None:
        return chosen, {}, "clean protocol"
    self.log(f"[published] {model}: no clean summary to take the grid point from; using {point_tag(self.grid[0])}")
    return self.grid[0], {}, NO_CLEAN_CHOICE

  def run(self, write_summary: bool = True) -> Optional[dict]:
    first = int(self.config.seed)
    rows = {}
    for model in self.models:
      point, scores, chosen_by = self._chosen_point(model, first)
      seeds = [first + s for s in range(self.seeds)] if self._trainable(model) else [first]
      results = [self._run(model, point, seed) for seed in seeds]
      rows[model] = {**_summarize(results, point, scores), "chosen_by": chosen_by}
    if not write_summary:
      return None
    summary = self._summary(rows)
    os.makedirs(self.root, exist_ok=True)
    with open(os.path.join(self.root, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2, sort_keys=True)
    with open(os.path.join(self.root, "summary.md"), "w") as f:
      f.write(format_summary(summary) + "\n")
    bar_chart(summary, os.path.join(self.root, "summary.png"))
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
            "improvement": improvement(rows)}


def describe_protocol(config, protocol: str) -> str:
  if protocol == "clean":
    return (f"clean: validation held out of training ({config.data.split}), early stopping and grid choice on "
            f"validation {config.train.select_metric}, test metrics of the best validation checkpoint")
  return (f"published: all target pairs as published train ({config.data.split}), no validation, fixed "
          f"{config.train.epochs} epochs, test metrics of the last epoch")


def _mean_std(values: list[float]) -> dict[str, float]:
  values = [v for v in values if v is not None and not math.isnan(v)]
  if not values:
    return {"mean": None, "std": None}  # no run has this metric (e.g. an empty group)
  return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def _summarize(results: list[dict], point: dict, scores: dict) -> dict:
  test = [r.get("test", {}) for r in results]
  row = {"runs": len(results), "seeds": [r["seed"] for r in results], "best_params": point,
         "grid_validation": scores, "status": [r.get("status") for r in results],
         "best_epoch": [r.get("best_epoch") for r in results]}
  row["test"] = {m: _mean_std([t.get(m, float("nan")) for t in test]) for m in METRICS}
  for group in ("observed", "unobserved"):
    row[group] = {m: _mean_std([t.get(f"{group}/{m}", float("nan")) for t in test]) for m in GROUP_METRICS}
  spe = [r.get("timings", {}).get("seconds_per_epoch") for r in results]
  spe = [s for s in spe if s is not None]
  row["seconds_per_epoch"] = statistics.median(spe) if spe else None
  row["provenance"] = [provenance(r) for r in results]
  return row


def provenance(result: dict) -> str:
  """Where a run was made: "<device kind>, <short source commit>" ("commit unrecorded" for results written
  before results.json recorded it)."""
  device = result.get("device", {})
  commit = result.get("versions", {}).get("hnt_jax_commit")
  if commit is None:
    commit = "commit unrecorded"
  elif commit != "unknown":
    commit = commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")
  return f"{device.get('kind', 'unknown device')}, {commit}"


def improvement(rows: dict) -> dict:
  """HNT's relative improvement over the best baseline (non-HNT model), per metric, as the paper reports."""
  if "hnt" not in rows:
    return {}
  baselines = {m: r for m, r in rows.items() if not m.startswith("hnt")}
  out = {}
  for metric in ("hr@10", "ndcg@10"):
    if not baselines:
      break
    value = lambda m: baselines[m]["test"][metric]["mean"] or 0.0
    best_name = max(baselines, key=value)
    base, ours = value(best_name), rows["hnt"]["test"][metric]["mean"] or 0.0
    out[metric] = {"best_baseline": best_name, "baseline": base, "hnt": ours,
                   "relative_percent": 100.0 * (ours - base) / base if base > 0 else None}
  return out


def _fmt(ms: dict) -> str:
  if ms["mean"] is None:
    return "—"
  if ms["std"] is None:  # one run
    return f"{ms['mean']:.4f}"
  return f"{ms['mean']:.4f} ± {ms['std']:.4f}"


def format_summary(summary: dict) -> str:
  pub = summary["published"]
  grid = f"grid `{summary['grid'] or '(none)'}`"
  if summary["protocol"] == "clean":
    chosen = f"{grid} chosen on validation {summary['select_metric']}"
  else:
    chosen = f"{grid}: each model at the point the clean protocol chose on validation {summary['select_metric']}"
    unchosen = [m for m, r in summary["models"].items() if r.get("chosen_by") == NO_CLEAN_CHOICE]
    if unchosen:
      chosen += f" (no clean choice, first grid point used: {', '.join(unchosen)})"
  lines = [f"# {summary['dataset']}: {summary['protocol']} protocol", "",
           summary["protocol_description"] + ".", "", f"Mean ± sample std over seeds; {chosen}.", ""]
  head = ["model"] + [m.upper() for m in METRICS] + ["observed HR@10", "unobserved HR@10", "best params",
                                                     "s/epoch", "runs"]
  if pub:
    head += ["published HR@10 / NDCG@10"]
  lines += ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(METRICS) + 2) + "|---|---:|---:|"
            + ("---|" if pub else "")]
  for model, r in summary["models"].items():
    cells = [model] + [_fmt(r["test"][m]) for m in METRICS]
    cells += [_fmt(r["observed"]["hr@10"]), _fmt(r["unobserved"]["hr@10"])]
    cells += [point_tag(r["best_params"]) if r["best_params"] else "defaults",
              "—" if r["seconds_per_epoch"] is None else f"{r['seconds_per_epoch']:.2f}", str(r["runs"])]
    if pub:
      p = pub.get(model)
      cells.append(f"{p['hr@10']:.4f} / {p['ndcg@10']:.4f}" if p else "—")
    lines.append("| " + " | ".join(cells) + " |")
  if pub:
    others = {m: v for m, v in pub.items() if m not in summary["models"]}
    if others:
      lines += ["", "Published only (not run here): " + ", ".join(
          f"{m} {v['hr@10']:.4f} / {v['ndcg@10']:.4f}" for m, v in others.items())]
    lines += ["", f"Published numbers: {summary['published_source']}."]
  made = collections.Counter(p for r in summary["models"].values() for p in r.get("provenance", []))
  if made:
    lines += ["", "Runs made on: " + "; ".join(f"{p} ({n} run{'s' if n > 1 else ''})"
                                              for p, n in sorted(made.items())) + "."]
  imp = summary["improvement"]
  if imp:
    parts = [f"{v['relative_percent']:+.2f}% {k.upper()} (over {v['best_baseline']})" for k, v in imp.items()
             if v["relative_percent"] is not None]
    lines += ["", "HNT against the best baseline: " + ", ".join(parts) + "."]
  return "\n".join(lines)


def chart_series(summary: dict) -> dict[str, dict]:
  """What the bar chart draws, per metric (HR@10, NDCG@10): the models' means and stds, and the published
  numbers of the models that have them (as {model index: value})."""
  models = list(summary["models"])
  series = {}
  for metric in ("hr@10", "ndcg@10"):
    published = {i: summary["published"][m][metric] for i, m in enumerate(models) if m in summary["published"]}
    series[metric] = {"means": [summary["models"][m]["test"][metric]["mean"] or 0.0 for m in models],
                      "stds": [summary["models"][m]["test"][metric]["std"] or 0.0 for m in models],
                      "published": published}
  return series


def bar_chart(summary: dict, path: str) -> Optional[str]:
  """HR@10 and NDCG@10 per model with std error bars, and a black tick at each published number (needs
  matplotlib, the `plots` extra)."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return None
  models = list(summary["models"])
  fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(models)), 3.5))
  width = 0.38
  labelled = False
  for k, (metric, s) in enumerate(chart_series(summary).items()):
    xs = [i + (k - 0.5) * width for i in range(len(models))]
    ax.bar(xs, s["means"], width, yerr=s["stds"], label=metric.upper())
    if s["published"]:
      ax.scatter([xs[i] for i in s["published"]], list(s["published"].values()), marker="_", s=300,
                 linewidths=2.5, color="black", zorder=3, label=None if labelled else "published")
      labelled = True
  ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
  ax.set_title(f"{summary['dataset']} ({summary['protocol']} protocol)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def model_command(argv: Sequence[str], model: str) -> list[str]:
  """The runner's own command line (`argv` without the program) for one model, run in one process and
  without a summary."""
  args, skip = [], False
  for arg in argv:
    if skip:
      skip = False
      continue
    name = arg.split("=", 1)[0]
    if name in ("--models", "--jobs", "--summary", "--nosummary"):
      skip = "=" not in arg and name in ("--models", "--jobs")
      continue
    args.append(arg)
  return [sys.executable, "-m", "hnt_jax.experiments", *args, f"--models={model}", "--jobs=1", "--nosummary"]


def run_in_processes(commands: dict[str, list[str]], jobs: int, log_dir: str,
                     log: Callable[[str], None] = print, poll_seconds: float = 1.0) -> None:
  """Runs one command per model, `jobs` at a time, each logging to `log_dir/<model>.log`; raises if any
  failed. Accelerator memory is not preallocated, so the processes can share one device."""
  import subprocess
  import time
  os.makedirs(log_dir, exist_ok=True)
  env = dict(os.environ)
  env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  pending, running, failed = list(commands), {}, []
  while pending or running:
    while pending and len(running) < jobs:
      model = pending.pop(0)
      handle = open(os.path.join(log_dir, f"{model}.log"), "w")
      running[model] = (subprocess.Popen(commands[model], stdout=handle, stderr=subprocess.STDOUT, env=env),
                        handle)
      log(f"started {model} (log: {handle.name})")
    time.sleep(poll_seconds)
    for model in [m for m, (proc, _) in running.items() if proc.poll() is not None]:
      proc, handle = running.pop(model)
      handle.close()
      log(f"{model}: {'finished' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'}")
      if proc.returncode:
        failed.append(model)
  if failed:
    raise RuntimeError(f"runs failed for {', '.join(failed)}; see their logs in {log_dir}")


def main_cli():
  from absl import app, flags
  from ml_collections import config_flags

  from hnt_jax import config as config_lib
  from hnt_jax.run import main_with_clean_errors

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

