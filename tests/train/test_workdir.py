"""A workdir under faults: lost or damaged files, two runs at once, kills mid-write, unwritable folders.

Each case ends in a correct result or a one-line error naming the file; nothing is reported in place of
what was lost."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from hnt_jax.errors import WorkdirError
from hnt_jax.train import records
from hnt_jax.train.loop import train_and_evaluate
from hnt_jax.train.setup import Run
from tests.conftest import REPO
from tests.train.test_loop import Interrupt, interrupt_after, read_lines, small_config, strip_timing


def decreasing_validation(run):
  """Makes every validation look worse than the one before, so that epoch 1 stays the best."""
  real, calls = run.evaluate, []

  def evaluate(params, model_state, split):
    out = dict(real(params, model_state, split))
    if split == "valid":
      calls.append(split)
      out["ndcg@10"] = 1.0 / len(calls)
    return out
  run.evaluate = evaluate
  return run


def garble(folder):
  for root, _, files in os.walk(folder):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")


def test_lost_best_checkpoint_is_rebuilt_from_its_copy_in_checkpoints(tmp_path, caplog):
  config = small_config(epochs=2, eval_every=1)  # checkpoints/ keeps epochs 1 and 2: both copies exist
  run = Run(config)
  first = train_and_evaluate(config, str(tmp_path), run=run)
  shutil.rmtree(tmp_path / "best")
  with caplog.at_level("WARNING"):
    again = train_and_evaluate(config, str(tmp_path), run=run)
  assert "rebuilt it from checkpoints" in caplog.text
  assert (again["best_epoch"], again["test"]) == (first["best_epoch"], first["test"])
  assert sorted(os.listdir(tmp_path / "best")) == [str(first["best_epoch"])]


@pytest.mark.parametrize("damage", ["delete", "garble"])
def test_lost_best_checkpoint_without_a_copy_is_refused(tmp_path, damage):
  config = small_config(epochs=4, eval_every=1)
  run = decreasing_validation(Run(config))
  first = train_and_evaluate(config, str(tmp_path), run=run)
  assert first["best_epoch"] == 1 and sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "4"]
  before = (tmp_path / "results.json").read_bytes()
  shutil.rmtree(tmp_path / "best") if damage == "delete" else garble(tmp_path / "best" / "1")
  with pytest.raises(WorkdirError, match=r"best state \(epoch 1.*missing or unreadable") as err:
    train_and_evaluate(config, str(tmp_path), run=run)
  assert str(tmp_path / "best") in str(err.value)
  assert (tmp_path / "results.json").read_bytes() == before  # nothing reported in its place


def test_recommend_refuses_a_run_whose_best_state_is_lost(tmp_path):
  from hnt_jax.train.loop import load_trained_params
  config = small_config(epochs=4, eval_every=1)
  run = decreasing_validation(Run(config))
  train_and_evaluate(config, str(tmp_path), run=run)
  assert load_trained_params(run, str(tmp_path))[2] == 1
  shutil.rmtree(tmp_path / "best")
  with pytest.raises(WorkdirError, match="epoch 1"):
    load_trained_params(run, str(tmp_path))


def test_deleted_checkpoints_folder_retrains_to_the_same_result(tmp_path):
  config = small_config(epochs=4)
  run = Run(config)
  first = train_and_evaluate(config, str(tmp_path), run=run)
  shutil.rmtree(tmp_path / "checkpoints")
  again = train_and_evaluate(config, str(tmp_path), run=run)
  assert (again["best_epoch"], again["test"]) == (first["best_epoch"], first["test"])


def test_a_second_run_on_a_locked_workdir_is_refused(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", (
      "import sys, time; from hnt_jax.train.records import WorkdirLock\n"
      "with WorkdirLock(sys.argv[1]):\n  print('locked', flush=True); time.sleep(60)"), str(tmp_path)],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirError, match=rf"another run is using this workdir \(process {holder.pid}@"):
      train_and_evaluate(small_config(epochs=2), str(tmp_path))
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "metrics.jsonl").exists()
  finally:
    holder.kill()
    holder.wait()
  assert train_and_evaluate(small_config(epochs=2), str(tmp_path))["status"] == "completed"  # released


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path, caplog):
  config = small_config(epochs=6)
  run = Run(config)
  full = train_and_evaluate(config, str(tmp_path / "full"), run=run)
  with pytest.raises(Interrupt):
    train_and_evaluate(config, str(tmp_path / "cut"), hooks=[interrupt_after(4)], run=run)
  with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 6, "loss": 0.69')  # a kill during a write
  with caplog.at_level("WARNING"):
    resumed = train_and_evaluate(config, str(tmp_path / "cut"), run=run)
  assert "torn last line" in caplog.text
  assert resumed["test"] == full["test"]
  a = [strip_timing(r) for r in read_lines(tmp_path / "full" / "metrics.jsonl")]
  b = [strip_timing(r) for r in read_lines(tmp_path / "cut" / "metrics.jsonl")]
  assert a == b


def test_damaged_metrics_line_before_the_last_is_named(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"epoch": 2}\nnot json\n{"epoch": 4}\n')
  with pytest.raises(WorkdirError, match=rf"{path}:2: not a JSON record"):
    records.read_jsonl(str(path))


def test_truncated_config_json_is_named(tmp_path):
  config = small_config(epochs=2)
  train_and_evaluate(config, str(tmp_path))
  text = (tmp_path / "config.json").read_text()
  (tmp_path / "config.json").write_text(text[: len(text) // 2])
  with pytest.raises(WorkdirError, match=rf"{tmp_path / 'config.json'}:\d+: not valid JSON"):
    train_and_evaluate(config, str(tmp_path))


def test_whole_file_writes_are_atomic(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  records.write_json(str(path), {"a": 1})
  monkeypatch.setattr(json, "dump", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
  with pytest.raises(KeyboardInterrupt):
    records.write_json(str(path), {"a": 2})  # interrupted mid-write
  assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["results.json"]


def cli(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "hnt_jax.main", "--config", "configs/synthetic.py", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_unwritable_workdir_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  out = cli(f"--workdir={tmp_path}/file/run", "--config.train.epochs=1")
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert out.stderr.strip() == (f"error: {tmp_path}/file/run: cannot write into the workdir (Not a directory); "
                                "choose another --workdir")


SMALL = ["--config.model.name=lightgcn", "--config.data.synthetic.n_users=120", "--config.data.synthetic.n_items=90",
         "--config.train.epochs=6", "--config.train.eval_every=2", "--config.train.checkpoint_every=1",
         "--config.train.batch_size=64", "--config.train.progress=False"]


@pytest.mark.slow
def test_kill_9_mid_run_then_the_same_command_ends_with_the_same_numbers(tmp_path):
  full = cli(f"--workdir={tmp_path}/full", *SMALL)
  assert full.returncode == 0, full.stderr
  cut = tmp_path / "cut"
  proc = subprocess.Popen([sys.executable, "-m", "hnt_jax.main", "--config", "configs/synthetic.py",
                           f"--workdir={cut}", *SMALL], cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (cut / "checkpoints" / "3").exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (cut / "results.json").exists(), "the run ended before it could be killed"
  again = cli(f"--workdir={cut}", *SMALL)
  assert again.returncode == 0, again.stderr
  a, b = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "full", cut))
  assert (a["test"], a["valid"], a["best_epoch"]) == (b["test"], b["valid"], b["best_epoch"])
