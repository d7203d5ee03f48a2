"""Several JAX processes on this machine (`launch/local.sh`: 2 processes x 2 CPU devices, joined by
jax.distributed, collectives over gloo) train as one process does. LightGCN keeps the runs short (a few
seconds each); HNT's own sharded objective is checked against one device in tests/distributed.

Three runs of the same config:
  one       1 process, 1 device, uninterrupted;
  one_two   1 process, 1 device for epoch 1 (a time limit stops it), resumed by 2 processes x 2 devices;
  two_one   2 processes x 2 devices for epoch 1, resumed by 1 process on 1 device.
Every epoch's loss and validation metrics, and the final test metrics, agree to float tolerance, so a
checkpoint written by 2 processes resumes in 1 and the other way round; only process 0 writes.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

ARGS = ["--config", str(REPO / "configs" / "synthetic.py"), "--config.model.name=lightgcn",
        "--config.data.synthetic.n_users=120", "--config.data.synthetic.n_items=90",
        "--config.train.batch_size=128", "--config.train.epochs=3", "--config.train.eval_every=1",
        "--config.train.patience=0", "--config.train.progress=False",
        "--config.eval.ks=10"]
STOP_AFTER_ONE_EPOCH = "--config.train.time_limit_minutes=0.00001"


def env(tmp_path):
  out = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "XLA_FLAGS"}
  return dict(out, PYTHONPATH=str(REPO), PYTHON=sys.executable, TMPDIR=str(tmp_path), JAX_PLATFORMS="cpu")


def one_process(tmp_path, workdir, *extra):
  proc = subprocess.run([sys.executable, "-m", "hnt_jax.main", *ARGS, f"--workdir={workdir}", *extra],
                        cwd=REPO, env=env(tmp_path), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def two_processes(tmp_path, workdir, *extra):
  logs = tmp_path / "logs"
  logs.mkdir(exist_ok=True)
  proc = subprocess.run(["bash", str(REPO / "launch" / "local.sh"), "--processes", "2", "--devices", "2", "--",
                         *ARGS, f"--workdir={workdir}", *extra],
                        cwd=REPO, env=dict(env(tmp_path), TMPDIR=str(logs)), capture_output=True, text=True,
                        timeout=600)
  (other,) = logs.glob("hnt_local.*/process_1.log")
  quiet = other.read_text()
  other.unlink()
  assert proc.returncode == 0, proc.stderr[-3000:] + quiet[-3000:]
  return proc, quiet


def lines(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_train_resume_and_write_as_one(tmp_path):
  one, one_two, two_one = (tmp_path / name for name in ("one", "one_two", "two_one"))
  one_process(tmp_path, one)
  one_process(tmp_path, one_two, STOP_AFTER_ONE_EPOCH)
  assert [r["epoch"] for r in lines(one_two)] == [1]  # stopped by the time limit, resumable
  two, quiet = two_processes(tmp_path, one_two)
  assert "resuming" in two.stdout and "test" not in quiet.lower()
  two, quiet = two_processes(tmp_path, two_one, STOP_AFTER_ONE_EPOCH)
  assert "epoch 1:" in two.stdout
  # process 1 prints no progress, no metrics and no results; it writes no metrics line, no event file
  assert "epoch 1" not in quiet and "results:" not in quiet and "HR@10" not in quiet
  assert [r["epoch"] for r in lines(two_one)] == [1]
  assert len(list(two_one.glob("events.out.tfevents.*"))) == 1
  one_process(tmp_path, two_one)

  ref = lines(one)
  assert [r["epoch"] for r in ref] == [1, 2, 3]
  for workdir in (one_two, two_one):
    got = lines(workdir)
    assert [r["epoch"] for r in got] == [1, 2, 3]
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in ref], rtol=1e-4)
    for a, b in zip(got, ref):
      for key, value in b["valid"].items():
        assert a["valid"][key] == pytest.approx(value, abs=1e-6), (workdir.name, a["epoch"], key)
    results, expected = (json.loads((w / "results.json").read_text()) for w in (workdir, one))
    assert results["best_epoch"] == expected["best_epoch"]
    for key, value in expected["test"].items():
      assert results["test"][key] == pytest.approx(value, abs=1e-6), (workdir.name, key)
  assert json.loads((two_one / "results.json").read_text())["device"]["processes"] == 1
  resumed_by_two = json.loads((one_two / "results.json").read_text())["device"]
  assert resumed_by_two["processes"] == 2 and resumed_by_two["mesh"] == "data=4 x model=1"
