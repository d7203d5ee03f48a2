"""Orbax checkpoints of a run: the latest (to resume) and the best by validation metric.

`<workdir>/checkpoints/<epoch>` keeps the two most recent states, so a corrupt or partial latest one falls
back to the previous with a warning; `<workdir>/best/<epoch>` keeps the state with the best validation
metric. A saved payload is any pytree (train state, loop state, model-specific state).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from hnt_jax.errors import WorkdirError

log = logging.getLogger(__name__)


class Checkpoints:

  def __init__(self, workdir: str):
    self.workdir = workdir
    options = dict(create=True, enable_async_checkpointing=False)
    self.latest = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                        options=ocp.CheckpointManagerOptions(max_to_keep=2, **options))
    self.best = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "best"),
                                      options=ocp.CheckpointManagerOptions(max_to_keep=1, **options))

  def save_latest(self, epoch: int, payload: Any) -> None:
    self.latest.save(epoch, args=ocp.args.StandardSave(payload), force=True)
    self.latest.wait_until_finished()

  def save_best(self, epoch: int, payload: Any) -> None:
    self.best.save(epoch, args=ocp.args.StandardSave(payload), force=True)
    self.best.wait_until_finished()

  def restore_latest(self, abstract: Any) -> Optional[tuple[int, Any]]:
    """(epoch, payload) of the newest readable checkpoint, or None when there is none."""
    return _restore_newest(self.latest, abstract, "latest")

  def restore_recorded_best(self, abstract: Any, best_epoch: int) -> tuple[int, Any]:
    """The state of `best_epoch`, the epoch the loop's saved state records as best: `best/<best_epoch>`, or
    else its copy in `checkpoints/` (and `best/` is rewritten from it). A best state that is lost is a
    WorkdirError: another epoch is never reported in its place."""
    payload = _restore_step(self.best, best_epoch, abstract, "best")
    if payload is not None:
      return best_epoch, payload
    payload = _restore_step(self.latest, best_epoch, abstract, "latest")
    if payload is None:
      raise WorkdirError(
          f"the best state (epoch {best_epoch}, as the run's saved loop state records) is missing or "
          f"unreadable, and checkpoints/ holds no copy of it; nothing was reported in its place. Restore "
          f"best/{best_epoch}, or train again in a new --workdir (the same config and seed reproduce the run)",
          os.path.join(os.path.abspath(self.workdir), "best"))
    log.warning("best checkpoint of epoch %d is missing or unreadable; rebuilt it from checkpoints/%d",
                best_epoch, best_epoch)
    for step in self.best.all_steps():
      self.best.delete(step)
    self.save_best(best_epoch, payload)
    return best_epoch, payload

  def discard_after(self, epoch: int) -> None:
    """Removes checkpoints newer than `epoch` (unreadable ones, or the future of an abandoned run)."""
    for manager in (self.latest, self.best):
      manager.reload()
      for step in manager.all_steps():
        if step > epoch:
          manager.delete(step)

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _restore_newest(manager: ocp.CheckpointManager, abstract: Any, what: str):
  manager.reload()
  for step in sorted(manager.all_steps(), reverse=True):
    payload = _restore_step(manager, step, abstract, what, reload=False,
                            then="; falling back to the previous one")
    if payload is not None:
      return step, payload
  return None


def _restore_step(manager: ocp.CheckpointManager, step: int, abstract: Any, what: str, reload: bool = True,
                  then: str = ""):
  """The payload of checkpoint `step`, or None when it is absent or unreadable (with a warning)."""
  if reload:
    manager.reload()
  if step not in manager.all_steps():
    return None
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # corrupt or partial
    path = os.path.join(str(manager.directory), str(step))
    log.warning("%s checkpoint %s is unreadable (%s: %s)%s", what, path, type(e).__name__, e, then)
    return None


def abstract_of(tree: Any) -> Any:
  """Shapes and dtypes of `tree`, for restoring into the same structure."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
