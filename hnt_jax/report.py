"""A Markdown table (mean ± std across seeds) and PNG curves of training runs.

  python -m hnt_jax.report DIR [DIR ...] [--out report.md] [--plots PLOT_DIR]

Each DIR is a run's workdir or a folder holding several. Runs whose configs differ only in `seed` are one
row; numbers are test metrics of each run's best checkpoint. Runs with a validation curve also get a table of
how far each curve falls below its best after reaching it (the drift of a long run).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from hnt_jax.config import INVOCATION_KEYS, flatten
from hnt_jax.summaries import METRICS, curve_drop, format_mean_std, mean_std
from hnt_jax.train.records import read_json, read_jsonl



def find_runs(paths: Sequence[str]) -> list[str]:
  runs = []
  for path in paths:
    for root, _, files in os.walk(path):
      if "results.json" in files and "config.json" in files:
        runs.append(root)
  return sorted(set(runs))


def load_run(workdir: str) -> dict[str, Any]:
  """A run's results, config and metric history; a damaged file is a WorkdirError naming it."""
  results = read_json(os.path.join(workdir, "results.json"))
  config = read_json(os.path.join(workdir, "config.json"))
  history = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return {"workdir": workdir, "results": results, "config": config, "history": history}


def one_per_seed(runs: list[dict]) -> list[dict]:
  """Drops a second run of the same setting and seed (a copied workdir), with a warning naming both:
  averaging copies would report a spread that no second seed produced."""
  kept, seen = [], {}
  for r in runs:
    key = (group_key(r["config"]), r["results"].get("seed"))
    if key in seen:
      print(f"warning: {r['workdir']} repeats the setting and seed {key[1]} of {seen[key]}; counted once",
            file=sys.stderr)
      continue
    seen[key] = r["workdir"]
    kept.append(r)
  return kept


# keys that do not make a setting: runs that differ only in these are seeds of one setting
IGNORED_KEYS = INVOCATION_KEYS + ("seed", "data.dir", "data.cache_dir", "data.use_cache")


def group_key(config: dict) -> str:
  """The config without the seed (and invocation-only keys): runs with equal keys are seeds of one setting."""
  flat = {k: v for k, v in flatten(config).items() if k not in IGNORED_KEYS}
  return json.dumps(flat, sort_keys=True)


def by_setting(runs: list[dict]) -> dict[str, list[dict]]:
  """The runs grouped by setting (`group_key`), in the order each setting first appears."""
  groups: dict[str, list[dict]] = {}
  for r in runs:
    groups.setdefault(group_key(r["config"]), []).append(r)
  return groups


def setting_labels(groups: dict[str, list[dict]]) -> dict[str, str]:
  """A row label per setting: the model name plus the config keys in which settings of that model differ."""
  flats = {g: json.loads(g) for g in groups}
  labels = {}
  for g, flat in flats.items():
    name = flat.get("model.name", "?")
    same_model = [f for f in flats.values() if f.get("model.name") == name]
    keys = sorted({k for f in same_model for k in f if any(o.get(k) != f.get(k) for o in same_model)})
    parts = [f"{k.removeprefix('model.')}={flat.get(k)}" for k in keys if k != "model.name"]
    labels[g] = name + (f" ({', '.join(parts)})" if parts else "")
  return labels


def table(runs: list[dict], metrics: Sequence[str] = METRICS, group: str = "") -> str:
  """Markdown: one row per setting, mean ± sample std over its seeds; `group` picks observed/unobserved."""
  groups = by_setting(runs)
  prefix = f"{group}/" if group else ""
  labels = setting_labels(groups)
  head = ["model", "dataset", "protocol", "split", "seeds"] + [m.upper() for m in metrics]
  head += ["best epoch", "s/epoch", "stopped"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 5 + "---:|" * (len(metrics) + 2) + "---|"]
  for key, members in groups.items():
    res = [m["results"] for m in members]
    first = res[0]
    cells = [labels[key], first["dataset"], first["protocol"], first["split"],
             ",".join(str(r["seed"]) for r in res)]
    cells += [format_mean_std(mean_std([r.get("test", {}).get(prefix + m) for r in res])) for m in metrics]
    cells.append(format_mean_std(mean_std([float(r["best_epoch"]) for r in res]), digits=1))
    spe = [r["timings"].get("seconds_per_epoch") for r in res if "seconds_per_epoch" in r["timings"]]
    cells.append(f"{np.median(spe):.2f}" if spe else "—")
    statuses = [r.get("status", "?") for r in res]
    cells.append(", ".join(f"{s} x{statuses.count(s)}" for s in sorted(set(statuses))))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def validation_curve(run: dict, metric: str) -> list[tuple[int, float]]:
  return [(x["epoch"], x["valid"][metric]) for x in run["history"] if metric in x.get("valid", {})]


def curve_table(runs: list[dict], metrics: Sequence[str] = ("ndcg@10", "hr@10")) -> str:
  """Markdown: per setting, how far each seed's validation curve falls below its best after reaching it
  (the largest such drop over the seeds, with its seed and epoch) and where it ends (mean ± std over the
  seeds); "" when no run has two evaluations."""
  groups = by_setting([r for r in runs if len(validation_curve(r, metrics[0])) >= 2])
  if not groups:
    return ""
  labels = setting_labels(groups)
  head = ["model", "seeds", "last evaluation", f"best valid {metrics[0].upper()} (epochs)"]
  for m in metrics:
    head += [f"{m.upper()}: largest drop below the best (seed, epoch)", f"{m.upper()}: below the best at the end"]
  lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---|" + "---:|" * (2 * len(metrics))]
  for key, members in groups.items():
    seeds = [m["results"]["seed"] for m in members]
    drops = {m: [curve_drop(validation_curve(r, m)) for r in members] for m in metrics}
    first = drops[metrics[0]]
    cells = [labels[key], ",".join(map(str, seeds)), ", ".join(sorted({str(d["end_epoch"]) for d in first})),
             f"{format_mean_std(mean_std([d['best'] for d in first]))} "
             f"({', '.join(str(d['best_epoch']) for d in first)})"]
    for m in metrics:
      worst = max(range(len(members)), key=lambda j: drops[m][j]["lowest_drop"])
      d = drops[m][worst]
      cells.append(f"{100 * d['lowest_drop']:.2f}% ({seeds[worst]}, {d['lowest_epoch']})")
      end = mean_std([100 * d["end_drop"] for d in drops[m]])
      cells.append(format_mean_std(end, digits=2) + "%")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot_curves(runs: list[dict], out_dir: str) -> list[str]:
  """loss and validation curves, one PNG per setting; needs matplotlib (the `plots` extra)."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print("matplotlib is not installed (pip install 'hnt_jax[plots]'): no plots", file=sys.stderr)
    return []
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for members in by_setting(runs).values():
    first = members[0]["results"]
    select = first.get("select_metric", "ndcg@10")
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.5))
    for m in members:
      h = m["history"]
      ax_loss.plot([x["epoch"] for x in h], [x["loss"] for x in h], label=f"seed {m['results']['seed']}")
      val = validation_curve(m, select)
      if val:
        line, = ax_val.plot(*zip(*val), marker="o", label=f"seed {m['results']['seed']}")
        if len(val) >= 2:  # the level 5% below this seed's best, against which a long run's drift is read
          ax_val.axhline(0.95 * curve_drop(val)["best"], color=line.get_color(), linestyle=":", linewidth=1)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss at evaluations")
    ax_val.set(xlabel="epoch", ylabel=f"validation {select}", title="validation")
    ax_loss.legend(), ax_val.legend()
    fig.suptitle(f"{first['model']} on {first['dataset']} ({first['protocol']}, {first['split']})")
    fig.tight_layout()
    path = os.path.join(out_dir, f"{first['dataset']}_{first['model']}_{len(written)}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m hnt_jax.report", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("dirs", nargs="+")
  parser.add_argument("--out", default="", help="also write the Markdown here")
  parser.add_argument("--plots", default="", help="write PNG curves into this folder")
  args = parser.parse_args(argv)
  paths = find_runs(args.dirs)
  if not paths:
    print(f"error: no finished runs (results.json) under {', '.join(args.dirs)}", file=sys.stderr)
    return 2
  runs = one_per_seed([load_run(p) for p in paths])
  text = table(runs)
  for group in ("observed", "unobserved"):
    if any(f"{group}/hr@10" in r["results"].get("test", {}) for r in runs):
      text += f"\n\nHeld-out items {group} in an auxiliary behavior of the user:\n\n" + table(runs, group=group)
  curves = curve_table(runs)
  if curves:
    text += ("\n\nValidation curves after their best (dotted in the plots: 5% below each seed's best):\n\n"
             + curves)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  if args.plots:
    for path in plot_curves(runs, args.plots):
      print(f"plot: {path}")
  return 0


if __name__ == "__main__":
  from hnt_jax.cli import main_with_clean_errors
  main_with_clean_errors(lambda: sys.exit(main()))
