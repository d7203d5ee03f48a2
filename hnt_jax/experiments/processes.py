"""Several models of one experiment at a time, each in its own process (e.g. sharing one GPU)."""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence


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


