"""Orbax checkpoints of a run: the latest (to resume) and the best by validation metric.

`<workdir>/checkpoints/<epoch>` keeps the two most recent states, so a corrupt or partial latest one falls
back to the previous with a warning; `<workdir>/best/<epoch>` keeps the state with the best validation
metric. A saved payload is any pytree (train state, loop state, model-specific state).

With several processes every process takes part in each save and restore. Values each process holds in
full on its own devices (the loop's counters, anything computed outside the mesh) are saved as arrays
replicated over all devices of all processes, which Orbax writes once, and come back as they were.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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
    self.latest.save(epoch, args=ocp.args.StandardSave(_global(payload)), force=True)
    self.latest.wait_until_finished()

  def save_best(self, epoch: int, payload: Any) -> None:
    self.best.save(epoch, args=ocp.args.StandardSave(_global(payload)), force=True)
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
    restored = manager.restore(step, args=ocp.args.StandardRestore(_global_abstract(abstract)))
    return _local_where(abstract, restored)
  except Exception as e:  # corrupt or partial
    path = os.path.join(str(manager.directory), str(step))
    log.warning("%s checkpoint %s is unreadable (%s: %s)%s", what, path, type(e).__name__, e, then)
    return None


def abstract_of(tree: Any) -> Any:
  """Shapes and dtypes of `tree`, for restoring into the same structure."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


# --- several processes -----------------------------------------------------------------------------------

def _local(x: Any) -> bool:
  """Whether a leaf (an array, or an abstract one) lives on this process's devices only (Orbax saves only
  arrays that span every process)."""
  sharding = getattr(x, "sharding", None)
  return sharding is None or sharding.is_fully_addressable


def _everywhere() -> NamedSharding:
  return NamedSharding(Mesh(np.asarray(jax.devices()), ("all",)), PartitionSpec())


def _global(tree: Any) -> Any:
  """`tree` with every process-local leaf replicated over all devices (unchanged with one process)."""
  if jax.process_count() == 1:
    return tree
  sharding = _everywhere()

  def one(x):
    if not _local(x):
      return x
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(one, tree)


def _global_abstract(abstract: Any) -> Any:
  if jax.process_count() == 1:
    return abstract
  sharding = _everywhere()
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding) if _local(a) else a,
                      abstract)


def _local_where(abstract: Any, restored: Any) -> Any:
  """The leaves that were process-local in `abstract` back on this process's device."""
  if jax.process_count() == 1:
    return restored
  return jax.tree.map(lambda a, x: x.addressable_data(0) if _local(a) else x, abstract, restored)
