"""`python -m hnt_jax.report`: how far a validation curve falls below its best, per setting over seeds."""
import json

import pytest

from hnt_jax import report
from hnt_jax.summaries import curve_drop

CURVE = [(5, 0.10), (10, 0.20), (15, 0.18), (20, 0.15), (25, 0.20), (30, 0.19)]


def test_curve_drop_counts_only_what_comes_after_the_first_best():
  d = curve_drop(CURVE)
  # epoch 5 (0.10) is lower than anything after the best but comes before it: not a drop
  assert (d["best"], d["best_epoch"]) == (0.20, 10)
  assert (d["lowest"], d["lowest_epoch"]) == (0.15, 20)
  assert d["lowest_drop"] == pytest.approx(0.25)
  assert (d["end"], d["end_epoch"]) == (0.19, 30) and d["end_drop"] == pytest.approx(0.05)
  rising = curve_drop([(1, 0.1), (2, 0.2), (3, 0.3)])
  assert rising["lowest_drop"] == 0.0 and rising["end_drop"] == 0.0 and rising["lowest_epoch"] == 3
  with pytest.raises(ValueError):
    curve_drop([])


def write_run(path, seed, curve, model="hnt"):
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps({"model": {"name": model}, "seed": seed, "train": {"lr": 0.01}}))
  best_epoch = curve_drop(curve)["best_epoch"] if curve else 0
  (path / "results.json").write_text(json.dumps({
      "model": model, "dataset": "synthetic", "protocol": "full", "split": "holdout_valid", "seed": seed,
      "best_epoch": best_epoch, "timings": {}, "status": "completed", "select_metric": "ndcg@10",
      "test": {"hr@10": 0.5, "ndcg@10": 0.25}}))
  rows = [{"epoch": e, "loss": 1.0 / e, "valid": {"ndcg@10": v, "hr@10": 2 * v}} for e, v in curve]
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_names_the_worst_seed_and_the_mean_drop_at_the_end(tmp_path, capsys):
  write_run(tmp_path / "s0", 0, CURVE)  # lowest 25% below its best at epoch 20, ends 5% below
  write_run(tmp_path / "s1", 1, [(5, 0.30), (10, 0.27), (15, 0.24), (20, 0.27), (25, 0.285), (30, 0.30)])
  assert report.main([str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "Validation curves after their best" in out
  row = next(line for line in out.splitlines() if line.startswith("| hnt | 0,1 | 30 |"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[3] == "0.2500 ± 0.0707 (10, 5)"  # best valid NDCG@10: 0.20 and 0.30, at epochs 10 and 5
  assert cells[4] == "25.00% (0, 20)"  # seed 1 drops 20% (epoch 15), seed 0 25%
  assert cells[5] == "2.50 ± 3.54%"  # 5% and 0% below the best at the last evaluation
  assert cells[6] == "25.00% (0, 20)"  # HR@10 is 2 x NDCG@10 here: the same shares


def test_runs_without_a_curve_get_no_curve_table(tmp_path, capsys):
  write_run(tmp_path / "s0", 0, [(10, 0.2)])
  write_run(tmp_path / "s1", 1, [])
  assert report.main([str(tmp_path)]) == 0
  assert "Validation curves" not in capsys.readouterr().out
  assert report.curve_table([]) == ""
