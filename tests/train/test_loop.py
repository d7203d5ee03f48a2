"""The training loop: learns, writes its outputs, resumes bit-identically, stops on NaN, guards workdirs."""
import json
import os
import subprocess
import sys

import shutil

import numpy as np
import pytest

from hnt_jax.config import base_config
from hnt_jax.errors import ConfigError
from hnt_jax.train.loop import TrainingDiverged, train_and_evaluate
from hnt_jax.train.sampler import make_sampler
from hnt_jax.train.setup import Run
from hnt_jax.train.records import source_commit, versions
from tests.conftest import REPO


def small_config(**train):
  config = base_config()
  syn = config.data.synthetic
  syn.n_users, syn.n_items = 200, 150
  config.train.update(dict(epochs=8, batch_size=256, learning_rate=5e-3, eval_every=2, patience=0,
                           checkpoint_every=2, progress=False))
  config.train.update(train)
  config.eval.ks = "10,20"
  config.model.name = "lightgcn"
  return config


class Interrupt(Exception):
  pass


def interrupt_after(epoch):
  def hook(e, state):
    if e == epoch:
      raise Interrupt
  return hook


def read_lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def strip_timing(record):
  return {k: v for k, v in record.items() if k not in ("epoch_seconds", "elapsed_seconds")}


def test_trains_and_writes_outputs(tmp_path):
  results = train_and_evaluate(small_config(), str(tmp_path))
  for name in ("config.json", "metrics.jsonl", "results.json"):
    assert (tmp_path / name).exists()
  lines = read_lines(tmp_path / "metrics.jsonl")
  assert [r["epoch"] for r in lines] == [2, 4, 6, 8]
  assert lines[-1]["loss"] < lines[0]["loss"]
  assert results["best_epoch"] in (2, 4, 6, 8) and results["epochs_run"] == 8
  assert set(results["test"]) >= {"hr@10", "ndcg@20", "observed/hr@10", "unobserved/ndcg@10", "users"}
  assert results["versions"]["jax"] and results["device"]["platform"] == "cpu"
  assert (tmp_path / "best").is_dir() and (tmp_path / "checkpoints").is_dir()
  t = results["timings"]  # where the start-up went, and the run's pace
  assert all(t[k] > 0 for k in ("setup_seconds", "init_seconds", "first_epoch_seconds", "seconds_per_epoch"))
  # counted from the start: the first evaluation (epoch 2) comes after the start-up and the first epoch
  assert t["seconds_to_best"] > t["setup_seconds"] + t["init_seconds"] + t["first_epoch_seconds"]


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_interrupted_run_resumes_bit_identically(tmp_path, schedule):
  """Also under a learning-rate schedule, whose position the optimizer state carries."""
  config = small_config(lr_schedule=schedule)
  full = train_and_evaluate(config, str(tmp_path / "full"))
  with pytest.raises(Interrupt):
    train_and_evaluate(config, str(tmp_path / "cut"), hooks=[interrupt_after(5)])
  resumed = train_and_evaluate(config, str(tmp_path / "cut"))
  assert resumed["test"] == full["test"] and resumed["valid"] == full["valid"]
  assert resumed["best_epoch"] == full["best_epoch"]
  # the time to the best state is known for the uninterrupted run only
  assert full["timings"]["seconds_to_best"] > 0 and resumed["timings"]["seconds_to_best"] is None
  a = [strip_timing(r) for r in read_lines(tmp_path / "full" / "metrics.jsonl")]
  b = [strip_timing(r) for r in read_lines(tmp_path / "cut" / "metrics.jsonl")]
  assert a == b


def test_time_limit_stops_resumably_and_the_rerun_finishes_identically(tmp_path):
  config = small_config()
  full = train_and_evaluate(config, str(tmp_path / "full"))
  limited = small_config(time_limit_minutes=1e-9)  # passes after the first epoch
  first = train_and_evaluate(limited, str(tmp_path / "cut"))
  assert first["status"] == "time_limit" and first["epochs_run"] == 1
  assert first["test"]["users"] > 0  # evaluated from the best (here: latest) state so far
  second = train_and_evaluate(limited, str(tmp_path / "cut"))  # same command again: one more epoch
  assert second["status"] == "time_limit" and second["epochs_run"] == 2
  resumed = train_and_evaluate(config, str(tmp_path / "cut"))  # no limit: runs to the end
  assert resumed["status"] == "completed" and resumed["epochs_run"] == 8
  assert resumed["test"] == full["test"] and resumed["best_epoch"] == full["best_epoch"]


def test_hnt_resume_restores_hesitation_sets_exactly(tmp_path):
  config = small_config(epochs=4)
  config.model.name = "hnt"
  config.model.hnt.hes_refresh_every = 2
  config.model.hnt.hes_threshold = 0.0  # every user gets a non-empty set, so L_hes is active
  run = Run(config)  # shared by the three trainings: its jitted functions compile once
  full = train_and_evaluate(config, str(tmp_path / "full"), run=run)
  with pytest.raises(Interrupt):
    train_and_evaluate(config, str(tmp_path / "cut"), hooks=[interrupt_after(3)], run=run)
  resumed = train_and_evaluate(config, str(tmp_path / "cut"), run=run)
  assert resumed["test"] == full["test"] and resumed["valid_diagnostics"] == full["valid_diagnostics"]
  assert full["valid_diagnostics"]["hesitation_coverage"] > 0.9


def test_early_stopping_state_survives_resume(tmp_path):
  config = small_config(epochs=30, patience=2, learning_rate=5e-2)
  full = train_and_evaluate(config, str(tmp_path / "full"))
  assert full["status"] == "early_stopped" and full["epochs_run"] < 30
  with pytest.raises(Interrupt):
    train_and_evaluate(config, str(tmp_path / "cut"), hooks=[interrupt_after(full["epochs_run"] - 1)])
  resumed = train_and_evaluate(config, str(tmp_path / "cut"))
  assert (resumed["epochs_run"], resumed["best_epoch"], resumed["test"]) == (
      full["epochs_run"], full["best_epoch"], full["test"])


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
  config = small_config(epochs=6)
  with pytest.raises(Interrupt):
    train_and_evaluate(config, str(tmp_path), hooks=[interrupt_after(4)])
  ckpts = tmp_path / "checkpoints"
  assert sorted(os.listdir(ckpts)) == ["2", "4"]
  for root, _, files in os.walk(ckpts / "4"):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")
  with caplog.at_level("WARNING"):
    results = train_and_evaluate(config, str(tmp_path))
  assert "unreadable" in caplog.text and "falling back" in caplog.text
  assert results["epochs_run"] == 6


def test_non_finite_training_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = small_config(optimizer="sgd", learning_rate=1e38, epochs=6)
  with pytest.raises(TrainingDiverged, match="non-finite") as err:
    train_and_evaluate(config, str(tmp_path))
  assert "learning_rate" in str(err.value)
  assert not (tmp_path / "results.json").exists()


def test_other_config_in_same_workdir_is_refused(tmp_path):
  train_and_evaluate(small_config(epochs=2), str(tmp_path))
  other = small_config(epochs=2)
  other.model.embed_dim = 8
  with pytest.raises(ConfigError, match="model.embed_dim"):
    train_and_evaluate(other, str(tmp_path))


def test_heuristic_evaluates_without_training(tmp_path):
  config = small_config()
  config.model.name = "heuristic"
  results = train_and_evaluate(config, str(tmp_path))
  assert results["status"] == "evaluated" and results["test"]["hr@10"] > 0.2


def test_cli_train_report_and_recommend(tmp_path):
  env = dict(os.environ)
  run = [sys.executable, "-m", "hnt_jax.main", "--config", "configs/synthetic.py", "--config.model.name=lightgcn",
         "--config.data.synthetic.n_users=100", "--config.data.synthetic.n_items=80",
         "--config.train.epochs=4", "--config.train.eval_every=2", "--config.train.progress=False"]
  for seed in (0, 1):
    out = subprocess.run(run + [f"--workdir={tmp_path}/runs/s{seed}", f"--config.seed={seed}"], cwd=REPO,
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "| all | 100 |" in out.stdout
  rep = subprocess.run([sys.executable, "-m", "hnt_jax.report", f"{tmp_path}/runs", "--plots",
                        f"{tmp_path}/plots"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert rep.returncode == 0, rep.stderr
  row = [l for l in rep.stdout.splitlines() if l.startswith("| lightgcn")][0]
  assert "| 0,1 |" in row and "±" in row
  assert any(l.startswith("| lightgcn | 0,1 | 4 |") for l in rep.stdout.splitlines())  # the curves' drop table
  assert len(list((tmp_path / "plots").glob("*.png"))) == 1
  rec = subprocess.run([sys.executable, "-m", "hnt_jax.recommend", "--workdir", f"{tmp_path}/runs/s0",
                        "--users", "0,5", "--k", "4", "--json"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert rec.returncode == 0, rec.stderr
  rows = json.loads(rec.stdout)
  assert [r["rank"] for r in rows] == [1, 2, 3, 4] * 2 and {r["user"] for r in rows} == {0, 5}
  bad = subprocess.run([sys.executable, "-m", "hnt_jax.recommend", "--workdir", f"{tmp_path}/runs/s0",
                        "--users", "100000"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "not in synthetic" in bad.stderr and "Traceback" not in bad.stderr


def test_extra_loss_term_is_added_to_the_step():
  import jax
  import jax.numpy as jnp
  import numpy as np

  from hnt_jax.train.setup import Run
  from hnt_jax.train.step import TrainState, make_optimizer, make_train_step
  config = small_config()
  run = Run(config)
  params, model_state = run.init_variables()
  batch = {k: jnp.arange(8, dtype=jnp.int32) for k in ("users", "pos", "neg")}
  key = jax.random.PRNGKey(0)

  def step_with(extra):
    fresh = jax.tree.map(jnp.copy, params)  # the step donates its input state
    state = TrainState.create(apply_fn=run.model.apply, params=fresh, tx=make_optimizer(config.train))
    return make_train_step(run.model, extra_loss=extra)(state, model_state, run.graphs, batch, key)

  base_state, base = step_with(None)
  const_state, const = step_with(lambda model, variables, graphs, b, k: jnp.float32(0.25))
  assert float(const["loss"]) == pytest.approx(float(base["loss"]) + 0.25, abs=1e-6)
  assert float(const["extra"]) == 0.25 and "extra" not in base
  np.testing.assert_allclose(const_state.params["users"], base_state.params["users"])  # no gradient
  pull = lambda model, variables, graphs, b, k: jnp.sum(variables["params"]["users"][0] ** 2)
  pulled_state, _ = step_with(pull)
  assert not np.allclose(pulled_state.params["users"][0], base_state.params["users"][0])
  np.testing.assert_allclose(pulled_state.params["users"][1:], base_state.params["users"][1:])


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_results_record_the_source_commit(tmp_path):
  """The commit of a checkout, marked dirty while a tracked file differs; "unknown" outside git; and
  `versions()` (written into results.json and benchmarks) carries the package's own."""
  repo = tmp_path / "src"
  repo.mkdir()

  def git(*args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()
  assert source_commit(str(repo)) == "unknown"
  git("init", "-q")
  (repo / "a.py").write_text("x = 1\n")
  git("add", "a.py")
  git("commit", "-qm", "one")
  sha = git("rev-parse", "HEAD")
  assert len(sha) == 40 and source_commit(str(repo)) == sha
  (repo / "untracked.txt").write_text("not part of the source\n")
  assert source_commit(str(repo)) == sha
  (repo / "a.py").write_text("x = 2\n")
  assert source_commit(str(repo)) == sha + "-dirty"
  assert versions()["hnt_jax_commit"] == source_commit(os.path.join(REPO, "hnt_jax"))


def test_results_name_the_commit_the_run_started_from(tmp_path, monkeypatch):
  """A commit made while a run trains does not change the commit its results name."""
  from hnt_jax.train import records
  monkeypatch.setattr(records, "_PACKAGE_COMMIT", None)
  commits = iter(["a" * 40, "b" * 40])
  monkeypatch.setattr(records, "source_commit", lambda path=None: next(commits))

  def commit_now(epoch, state):
    if epoch == 2:
      assert records.source_commit() == "b" * 40  # the checkout moved on
  results = train_and_evaluate(small_config(epochs=2), str(tmp_path), hooks=[commit_now])
  assert results["versions"]["hnt_jax_commit"] == "a" * 40


def test_cosine_schedule_decays_over_the_runs_steps(tmp_path, monkeypatch):
  """`train.lr_schedule=cosine` decays from the learning rate to `lr_final_fraction` of it over epochs x
  the run's steps per epoch (the cosine formula, checked at its ends and middle), and the training loop
  builds it with its own sampler's steps per epoch."""
  from hnt_jax.train import loop, step
  config = small_config(lr_schedule="cosine", lr_final_fraction=0.1, learning_rate=0.01, epochs=4)
  sched = step.learning_rate(config.train, steps_per_epoch=5)
  total = 20
  for t in (0, 5, 10, 15, 20, 30):
    want = 0.01 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(t, total) / total)))
    np.testing.assert_allclose(float(sched(t)), want, rtol=1e-5)
  assert step.learning_rate(small_config().train) == 5e-3  # constant: the plain number
  seen = []
  monkeypatch.setattr(loop, "make_optimizer",
                      lambda tc, steps=1: seen.append(steps) or step.make_optimizer(tc, steps))
  run = Run(config)
  train_and_evaluate(config, str(tmp_path), run=run)
  assert seen == [make_sampler(run.graphs.target, run.ds.n_items, 256).steps] and seen[0] > 1


@pytest.mark.parametrize("model", ["hnt", "lightgcn"])
def test_jitted_init_equals_the_op_by_op_init(model):
  """`Run.init_variables` initializes under jit; every value, parameters and model state, is the one the
  op-by-op `init` gives (runs started before that change start from the same state)."""
  import jax
  import jax.numpy as jnp
  config = small_config()
  config.model.name = model
  run = Run(config)
  params, model_state = run.init_variables()
  key = jax.random.PRNGKey(config.seed)
  dummy = {k: jnp.zeros((config.train.batch_size,), jnp.int32) for k in ("users", "pos", "neg")}
  eager = dict(run.model.init({"params": key, "sample": key}, run.graphs, dummy, method=run.model.loss))
  eager_params = eager.pop("params")
  assert jax.tree.structure(params) == jax.tree.structure(eager_params)
  for got, want in zip(jax.tree.leaves((params, model_state)), jax.tree.leaves((eager_params, eager))):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert len(jax.tree.leaves(model_state)) == (3 if model == "hnt" else 0)
