"""Numbers over seeds, the same way in `report` and in the experiment runner: which metrics, mean ± sample
standard deviation, and how they are printed."""
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
