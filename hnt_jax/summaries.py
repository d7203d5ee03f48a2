"""Numbers over seeds, the same way in `report` and in the experiment runner: which metrics, mean ± sample
standard deviation, how they are printed, and how far a validation curve falls below its best."""
from __future__ import annotations

import math
import statistics
from typing import Optional

METRICS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "hr@50", "ndcg@50")
GROUP_METRICS = ("hr@10", "ndcg@10")  # for the observed / unobserved breakdown


def mean_std(values: list[Optional[float]]) -> dict[str, Optional[float]]:
  """{"mean", "std"} over the values that are numbers; std is None for one value, both None for none."""
  values = [v for v in values if v is not None and not math.isnan(v)]
  if not values:
    return {"mean": None, "std": None}
  return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def format_mean_std(ms: dict, digits: int = 4) -> str:
  """"0.2795 ± 0.0006", "0.2795" for one run, "—" for none."""
  if ms["mean"] is None:
    return "—"
  if ms["std"] is None:
    return f"{ms['mean']:.{digits}f}"
  return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def curve_drop(points: list[tuple[int, float]]) -> dict[str, float]:
  """How far a validation curve [(epoch, value), ...] falls below its best after reaching it: the best
  (its first epoch), the lowest value from there on and the last one, each drop as a fraction of the best
  (0.05: 5% below). The question a long run answers: does training on erode what early stopping would keep?"""
  if not points:
    raise ValueError("a validation curve needs at least one evaluation")
  best_at = max(range(len(points)), key=lambda j: (points[j][1], -j))
  best_epoch, best = points[best_at]
  low_epoch, low = min(points[best_at:], key=lambda p: p[1])
  end_epoch, end = points[-1]
  share = (lambda v: (best - v) / best) if best > 0 else (lambda v: 0.0)
  return {"best": best, "best_epoch": best_epoch, "lowest": low, "lowest_epoch": low_epoch,
          "lowest_drop": share(low), "end": end, "end_epoch": end_epoch, "end_drop": share(end)}
