"""What a run writes into its workdir besides checkpoints, and the lock that keeps it to one run at a time.

  config.json    the exact configuration (compared on resume: another config is another run)
  metrics.jsonl  one JSON line per evaluation, appended; a torn last line (a kill mid-write) is dropped
  results.json   test and validation metrics of the best state, timings, versions, device
  .lock          held (flock) by the run that owns the workdir; a second run on it is refused
  events.out.tfevents.*  the same scalars for TensorBoard (`tensorboard --logdir runs/`; train.tensorboard)

Whole-file writes go to a temporary file that replaces the old one, so a kill never leaves half a file.
Provenance (package versions, the source commit, the device) is recorded here too.
"""
from __future__ import annotations

import json
import logging
import numbers
import os
import platform
import tempfile
import time
from typing import Any, Optional

import numpy as np

from hnt_jax.config import INVOCATION_KEYS, flatten
from hnt_jax.errors import ConfigError, WorkdirError
from hnt_jax.folders import first_missing, remove_empty

log = logging.getLogger(__name__)


# --- files ---------------------------------------------------------------------------------------------

def replace_file(path: str, write) -> None:
  """Writes `path` atomically: `write(f)` fills a temporary file in the same folder, which then replaces it."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      write(f)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as JSON to `path` atomically."""
  def write(f):
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
  replace_file(path, write)


def read_json(path: str) -> Any:
  """The JSON in `path`; a file that is not JSON is a WorkdirError naming the file, line and column."""
  with open(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise WorkdirError(f"not valid JSON ({e.msg}, column {e.colno}); the file is truncated or damaged",
                       path, e.lineno) from None


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSON-lines file. A last line that does not parse is what a kill during a write
  leaves: it is dropped with a warning. A bad line before the last is a WorkdirError naming it."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.read().split("\n")
  records = []
  numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
  for n, (line_no, line) in enumerate(numbered):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if n == len(numbered) - 1:
        log.warning("%s:%d: dropping a torn last line (%s)", path, line_no, e.msg)
        break
      raise WorkdirError(f"not a JSON record ({e.msg}); delete or repair that line", path, line_no) from None
  return records


def append_metrics(workdir: str, record: dict) -> None:
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps(record, sort_keys=True) + "\n")


def truncate_metrics(workdir: str, epoch: int) -> None:
  """Keeps the records up to `epoch`, the checkpoint a run resumes from (later ones are written again)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return
  kept = [r for r in read_jsonl(path) if r.get("epoch", 0) <= epoch]
  replace_file(path, lambda f: f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in kept))


class Scalars:
  """TensorBoard event files in the workdir, written with tensorboardX (no TensorFlow needed): per epoch
  `train/loss`, each loss part, `train/epoch_seconds` and `train/steps_per_second`; per evaluation
  `valid/<metric>` and `diagnostics/<name>`; at the end `test/<metric>` at the best epoch (`hr@10` is
  tagged `hr_at_10`). A resumed run purges the events after the epoch it resumes from, so its curves are
  those of an uninterrupted run."""

  def __init__(self, workdir: str, enabled: bool = True, resume_epoch: int = 0):
    self._writer = None
    if not enabled:
      return
    try:
      from tensorboardX import SummaryWriter
    except ImportError:
      log.warning("tensorboardX is not installed (pip install tensorboardX): no TensorBoard events")
      return
    # one file per invocation (the suffix keeps two in the same second apart); TensorBoard reads them in
    # name order, so a resumed run's file comes after the one it continues
    self._writer = SummaryWriter(logdir=workdir, purge_step=resume_epoch + 1 if resume_epoch else None,
                                 flush_secs=10, filename_suffix=f".{time.time_ns()}")

  def write(self, step: int, prefix: str, values: dict) -> None:
    if self._writer is None:
      return
    for name, value in values.items():
      if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        # TensorBoard tags allow letters, digits, "_", "-", "." and "/": hr@10 is written hr_at_10
        self._writer.add_scalar(f"{prefix}/{name}".replace("@", "_at_"), float(value), step)

  def flush(self) -> None:
    """Called with every checkpoint: what a resumed run continues from is then on disk too."""
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


# --- the run's identity: config.json ------------------------------------------------------------------

_MISSING = object()


def check_config(config, workdir: str, has_checkpoint: bool) -> None:
  """Refuses a workdir whose config.json belongs to another run. A run that saved nothing to resume from
  (no checkpoint, no results) is not continued: its config is replaced."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  saved = read_json(path)
  current = json.loads(config.to_json_best_effort())
  a, b = flatten(saved), flatten(current)
  keys = sorted(k for k in a.keys() | b.keys()
                if k not in INVOCATION_KEYS and a.get(k, _MISSING) != b.get(k, _MISSING))
  if not keys:
    return
  if not has_checkpoint and not os.path.exists(os.path.join(workdir, "results.json")):
    log.warning("%s: the run that wrote it saved no checkpoint; starting this config in its place", path)
    return
  raise ConfigError(f"workdir {workdir} holds a run with a different config (keys: {', '.join(keys)}); "
                    "use another --workdir to start a new run")


def write_config(config, workdir: str) -> None:
  write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))


# --- one run per workdir ---------------------------------------------------------------------------------

class WorkdirLock:
  """An exclusive lock on `<workdir>/.lock` for the life of a run (released by the OS if the process dies).

  A second run on the same workdir gets a WorkdirError naming the process that holds it. File systems
  without flock (some network mounts) run unlocked, with a warning."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, ".lock")
    self._file = None

  def __enter__(self) -> "WorkdirLock":
    self._created = first_missing(self.workdir)  # the outermost folder this run creates, if any
    try:
      os.makedirs(self.workdir, exist_ok=True)
      self._file = open(self.path, "a+")
    except OSError as e:
      raise WorkdirError(f"cannot write into the workdir ({e.strerror}); choose another --workdir",
                         self.workdir) from None
    try:
      import fcntl
    except ImportError:  # not a POSIX system: no lock
      return self
    try:
      fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._file.seek(0)
      holder = self._file.read().strip() or "unknown"
      self._file.close()
      self._file = None
      raise WorkdirError(f"another run is using this workdir (process {holder}); wait for it to end or "
                         "use another --workdir", self.workdir) from None
    except OSError as e:
      log.warning("%s: cannot lock (%s); running without a workdir lock", self.path, e.strerror)
      return self
    self._file.seek(0)
    self._file.truncate()
    self._file.write(f"{os.getpid()}@{platform.node()}\n")
    self._file.flush()
    return self

  def __exit__(self, *exc) -> None:
    if self._file is not None:
      self._file.close()  # closing releases the flock
      self._file = None
      if self._created and _holds_nothing(self.workdir):  # a run that stopped before writing anything
        os.remove(self.path)
        for root, dirs, _ in os.walk(self.workdir, topdown=False):
          for d in dirs:
            os.rmdir(os.path.join(root, d))
        remove_empty(self.workdir, self._created)


def _holds_nothing(workdir: str) -> bool:
  """Only the lock file and empty folders: nothing a run wrote."""
  for root, _, files in os.walk(workdir):
    if any(not (root == workdir and f == ".lock") for f in files):
      return False
  return True


# --- provenance ------------------------------------------------------------------------------------------

def versions() -> dict[str, str]:
  """Installed versions of the packages a result depends on, and the commit of the hnt_jax source."""
  from importlib import metadata
  out = {"python": platform.python_version()}
  for package in ("hnt_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy"):
    try:
      out[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      out[package] = "not installed"
  out["hnt_jax_commit"] = package_commit()
  return out


_PACKAGE_COMMIT: Optional[str] = None


def package_commit() -> str:
  """`source_commit()` of the imported hnt_jax package as this process first read it: a training run reads
  it when it starts, so that its results name the source it ran, not a commit made while it trained."""
  global _PACKAGE_COMMIT
  if _PACKAGE_COMMIT is None:
    _PACKAGE_COMMIT = source_commit()
  return _PACKAGE_COMMIT


def source_commit(path: Optional[str] = None) -> str:
  """The git commit of the source under `path` (default: the imported hnt_jax package): "<sha>-dirty" when
  tracked files there differ from it, "unknown" outside a git checkout (e.g. an installed wheel)."""
  import subprocess
  here = path or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def git(*args: str) -> str:
    return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()
  try:
    sha = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return f"{sha}-dirty" if dirty else sha


def device_info(mesh=None) -> dict[str, Any]:
  import jax

  from hnt_jax import distributed
  d = jax.devices()[0]
  return {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count(),
          "processes": jax.process_count(), "mesh": distributed.describe(mesh)}
