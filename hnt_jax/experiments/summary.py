"""An experiment's summary: mean ± std per model over seeds, HNT against the best baseline, where the runs
were made, as JSON, Markdown and a bar chart."""
from __future__ import annotations

import collections
import statistics
from typing import Optional

from hnt_jax.summaries import GROUP_METRICS, METRICS, format_mean_std, mean_std

NO_CLEAN_CHOICE = "first grid point (no clean summary)"


def point_tag(point: dict) -> str:
  """A grid point as a folder and label: "learning_rate=0.01" ("default" for none)."""
  if not point:
    return "default"
  return "_".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(point.items()))


def summarize(results: list[dict], point: dict, scores: dict) -> dict:
  test = [r.get("test", {}) for r in results]
  row = {"runs": len(results), "seeds": [r["seed"] for r in results], "best_params": point,
         "grid_validation": scores, "status": [r.get("status") for r in results],
         "best_epoch": [r.get("best_epoch") for r in results]}
  row["test"] = {m: mean_std([t.get(m, float("nan")) for t in test]) for m in METRICS}
  for group in ("observed", "unobserved"):
    row[group] = {m: mean_std([t.get(f"{group}/{m}", float("nan")) for t in test]) for m in GROUP_METRICS}
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
    cells = [model] + [format_mean_std(r["test"][m]) for m in METRICS]
    cells += [format_mean_std(r["observed"]["hr@10"]), format_mean_std(r["unobserved"]["hr@10"])]
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


