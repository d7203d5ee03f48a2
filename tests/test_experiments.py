"""The experiment runner end to end on tiny synthetic data: grid chosen on validation, seeds, resume,
summaries, protocol labels, published column only under the published protocol."""
import json

import pytest

from hnt_jax import experiments
from hnt_jax.config import apply_overrides, base_config
from hnt_jax.summaries import mean_std
from hnt_jax.errors import ConfigError


def tiny_config():
  config = base_config()
  config.data.synthetic.update(n_users=120, n_items=90)
  config.train.update(epochs=4, batch_size=256, eval_every=2, patience=0, progress=False)
  config.model.embed_dim = 16
  config.eval.ks = "10,20,50"
  config.experiments.update(grid="train.learning_rate=0.001,0.01", published="mf=0.1000/0.0500; MuLe=0.2/0.1",
                            published_source="a test table", published_epochs=3)
  return config


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
  out = tmp_path_factory.mktemp("exp")
  calls = []

  def train(config, workdir):
    from hnt_jax.train.loop import train_and_evaluate
    calls.append((config.model.name, config.train.learning_rate, config.seed, workdir))
    return train_and_evaluate(config, workdir)

  summary = experiments.Experiment(tiny_config(), str(out), ["mf", "heuristic"], seeds=2, train_fn=train,
                                   log=lambda s: None).run()
  return out, summary, calls, train


def test_grid_then_seeds_and_summary_files(clean):
  out, summary, calls, _ = clean
  mf_calls = [c for c in calls if c[0] == "mf"]
  # two grid points with the first seed, then the second seed at the chosen point; the heuristic runs once
  assert len(mf_calls) == 3 and sorted(c[2] for c in mf_calls) == [0, 0, 1]
  assert [c for c in calls if c[0] == "heuristic"] == [("heuristic", 0.001, 0, str(out / "clean/heuristic/default/s0"))]
  row = summary["models"]["mf"]
  scores = row["grid_validation"]
  assert set(scores) == {"learning_rate=0.001", "learning_rate=0.01"}
  best_tag = max(scores, key=scores.get)
  assert experiments.point_tag(row["best_params"]) == best_tag
  assert mf_calls[-1][1] == row["best_params"]["train.learning_rate"] and mf_calls[-1][2] == 1
  for name in ("summary.md", "summary.json", "summary.png"):
    assert (out / "clean" / name).exists()
  on_disk = json.loads((out / "clean" / "summary.json").read_text())
  assert on_disk["protocol"] == "clean" and on_disk["models"]["mf"]["runs"] == 2
  # the means are the means of the runs' test metrics
  runs = [json.loads((out / "clean/mf" / best_tag / f"s{s}/results.json").read_text()) for s in (0, 1)]
  assert row["test"]["hr@10"]["mean"] == pytest.approx(sum(r["test"]["hr@10"] for r in runs) / 2)
  md = (out / "clean" / "summary.md").read_text()
  assert "clean protocol" in md and "validation held out" in md
  assert "published HR@10" not in md and "Published numbers" not in md  # never beside clean numbers
  # where the runs were made: device and source commit, counted over the table's runs
  from hnt_jax.train.records import source_commit
  commit = source_commit()
  short = commit if commit == "unknown" else commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")
  assert row["provenance"] == [f"cpu, {short}"] * 2
  assert f"Runs made on: cpu, {short} (3 runs)." in md
  assert row["chosen_by"] == "validation" and summary["models"]["heuristic"]["chosen_by"] == "no parameters"
  # the curve drops of the table's runs (mf's two seeds at the chosen point, 2 evaluations each); the
  # heuristic's single evaluation is no curve
  from hnt_jax import report
  chosen = [report.load_run(str(out / "clean/mf" / best_tag / f"s{s}")) for s in (0, 1)]
  assert md.endswith(report.curve_table(chosen) + "\n") and "## Validation curves" in md
  curve_rows = [line for line in md.split("## Validation curves")[1].splitlines() if line.startswith("| mf")]
  assert len(curve_rows) == 1 and curve_rows[0].startswith("| mf | 0,1 | 4 |")


def test_provenance_names_device_and_short_commit():
  sha = "0123456789abcdef0123456789abcdef01234567"
  result = {"device": {"kind": "NVIDIA H200"}, "versions": {"hnt_jax_commit": sha}}
  assert experiments.provenance(result) == "NVIDIA H200, 0123456"
  result["versions"]["hnt_jax_commit"] = sha + "-dirty"
  assert experiments.provenance(result) == "NVIDIA H200, 0123456-dirty"
  assert experiments.provenance({"device": {"kind": "cpu"}, "versions": {}}) == "cpu, commit unrecorded"
  assert experiments.provenance({"versions": {"hnt_jax_commit": "unknown"}}) == "unknown device, unknown"


def test_rerun_skips_finished_runs(clean):
  out, summary, calls, train = clean
  before = len(calls)
  again = experiments.Experiment(tiny_config(), str(out), ["mf", "heuristic"], seeds=2, train_fn=train,
                                 log=lambda s: None).run()
  assert len(calls) == before
  assert again["models"]["mf"]["test"] == summary["models"]["mf"]["test"]


def test_published_protocol_uses_clean_choice_fixed_epochs_and_shows_published_numbers(clean):
  out, summary, _, _ = clean
  published = experiments.Experiment(tiny_config(), str(out), ["mf"], seeds=1, protocol="published",
                                     log=lambda s: None).run()
  row = published["models"]["mf"]
  assert row["best_params"] == summary["models"]["mf"]["best_params"]  # taken from the clean summary
  (result,) = [json.loads(p.read_text()) for p in (out / "published/mf").glob("*/s0/results.json")]
  assert result["epochs_run"] == 3 and result["best_epoch"] == 3 and result["split"] == "published"
  assert published["published"]["mf"] == {"hr@10": 0.1, "ndcg@10": 0.05}
  md = (out / "published" / "summary.md").read_text()
  assert "published protocol" in md and "0.1000 / 0.0500" in md and "MuLe 0.2000 / 0.1000" in md
  assert "a test table" in md
  assert row["chosen_by"] == "clean protocol"
  # the chart carries the published number beside the model's bars (mf is the only model here)
  series = experiments.chart_series(published)
  assert series["hr@10"]["published"] == {0: 0.1} and series["ndcg@10"]["published"] == {0: 0.05}
  assert series["hr@10"]["means"] == [row["test"]["hr@10"]["mean"]]
  assert "each model at the point the clean protocol chose on validation ndcg@10." in md


def test_published_without_a_clean_run_says_which_models_took_the_first_grid_point(tmp_path):
  def train(config, workdir):  # no training needed: only the choice of grid point is under test
    return {"seed": config.seed, "test": {}}

  summary = experiments.Experiment(tiny_config(), str(tmp_path), ["mf", "heuristic"], seeds=1, train_fn=train,
                                   protocol="published", log=lambda s: None).run()
  assert summary["models"]["mf"]["chosen_by"] == experiments.NO_CLEAN_CHOICE
  assert summary["models"]["mf"]["best_params"] == {"train.learning_rate": 0.001}
  md = (tmp_path / "published" / "summary.md").read_text()
  assert "(no clean choice, first grid point used: mf)." in md


def test_improvement_is_relative_to_the_best_baseline():
  rows = {name: {"test": {"hr@10": {"mean": hr}, "ndcg@10": {"mean": nd}}}
          for name, hr, nd in (("hnt", 0.30, 0.15), ("hnt_no_hes", 0.5, 0.5), ("lightgcn", 0.2, 0.12),
                               ("heuristic", 0.25, 0.10))}
  imp = experiments.improvement(rows)
  assert imp["hr@10"]["best_baseline"] == "heuristic" and imp["hr@10"]["relative_percent"] == pytest.approx(20.0)
  assert imp["ndcg@10"]["best_baseline"] == "lightgcn" and imp["ndcg@10"]["relative_percent"] == pytest.approx(25.0)


def test_grid_published_and_model_parsing():
  assert experiments.parse_grid("") == [{}]
  assert experiments.parse_grid("a.b=1,2;c=x") == [{"a.b": 1, "c": "x"}, {"a.b": 2, "c": "x"}]
  assert experiments.parse_grid("t.lr=0.001,1e-2")[1] == {"t.lr": 0.01}
  assert experiments.model_overrides("hnt_no_nt") == {"model.name": "hnt", "model.hnt.use_negative_transfer": False}
  with pytest.raises(ConfigError, match="unknown model 'gnn'"):
    experiments.model_overrides("gnn")
  with pytest.raises(ConfigError, match="key=value1,value2"):
    experiments.parse_grid("lr")
  with pytest.raises(ConfigError, match="HR@10/NDCG@10"):
    experiments.parse_published("mf=0.1")
  with pytest.raises(ConfigError, match="does not exist"):
    apply_overrides(base_config(), {"train.learning_rat": 0.1})
  assert mean_std([float("nan")]) == {"mean": None, "std": None}
  assert mean_std([0.5]) == {"mean": 0.5, "std": None}


def test_model_command_keeps_every_flag_but_the_model_list():
  argv = ["--config", "configs/taobao.py", "--out=runs/x", "--models", "hnt,mf", "--jobs", "4", "--seeds=3",
          "--config.train.epochs=5", "--jobs=2", "--models=a,b", "--summary"]
  cmd = experiments.model_command(argv, "mf")
  assert cmd[1:3] == ["-m", "hnt_jax.experiments"]
  assert cmd[3:] == ["--config", "configs/taobao.py", "--out=runs/x", "--seeds=3", "--config.train.epochs=5",
                     "--models=mf", "--jobs=1", "--nosummary"]


def test_models_run_in_parallel_processes_and_failures_are_reported(tmp_path):
  import sys
  ok = [sys.executable, "-c", "import os; print('ran', os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'])"]
  bad = [sys.executable, "-c", "import sys; print('broken'); sys.exit(3)"]
  logs = []
  with pytest.raises(RuntimeError, match="runs failed for b; see their logs"):
    experiments.run_in_processes({"a": ok, "b": bad, "c": ok}, jobs=2, log_dir=str(tmp_path), log=logs.append,
                                 poll_seconds=0.05)
  assert (tmp_path / "a.log").read_text() == "ran false\n" and (tmp_path / "b.log").read_text() == "broken\n"
  assert (tmp_path / "c.log").exists() and "b: FAILED (exit 3)" in logs and "c: finished" in logs


def test_run_without_summary_leaves_no_summary(clean, tmp_path):
  out, _, _, train = clean
  assert experiments.Experiment(tiny_config(), str(out), ["heuristic"], seeds=1, train_fn=train,
                                log=lambda s: None).run(write_summary=False) is None
  fresh = experiments.Experiment(tiny_config(), str(tmp_path), ["heuristic"], seeds=1, train_fn=train,
                                 log=lambda s: None)
  fresh.run(write_summary=False)
  assert not (tmp_path / "clean" / "summary.json").exists()
