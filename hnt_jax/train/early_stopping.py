"""Model selection on validation: the best value so far, its epoch, and when patience runs out.

Its state travels in every checkpoint (`arrays()` / `from_arrays`), so a resumed run selects and stops
exactly where an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class EarlyStopping:
  patience: int  # evaluations without improvement before stopping; 0: never stop early
  epoch: int = 0  # the last epoch trained
  best_value: float = -math.inf
  best_epoch: int = -1  # -1: nothing evaluated yet
  bad_evals: int = 0
  stopped: bool = False

  def update(self, epoch: int, value: float) -> bool:
    """Records the validation `value` of `epoch`; True when it is the best so far."""
    if value > self.best_value:
      self.best_value, self.best_epoch, self.bad_evals = value, epoch, 0
      return True
    self.bad_evals += 1
    if self.patience and self.bad_evals >= self.patience:
      self.stopped = True
    return False

  def arrays(self) -> dict[str, Any]:
    """The state as arrays, for a checkpoint."""
    return {k: jnp.asarray(getattr(self, k)) for k in ("epoch", "best_value", "best_epoch", "bad_evals",
                                                       "stopped")}

  @classmethod
  def from_arrays(cls, patience: int, arrays: dict[str, Any]) -> "EarlyStopping":
    return cls(patience=patience, **{k: np.asarray(v).item() for k, v in arrays.items()})
