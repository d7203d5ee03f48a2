"""The benchmark suite: the JSON layout tools rely on, positive timings, and the propagation cross-check."""
import json

import pytest

from hnt_jax import bench
from hnt_jax.config import base_config


def test_bench_reports_every_field_for_each_model_and_propagation():
  config = base_config()
  config.data.synthetic.update(n_users=80, n_items=60)
  config.train.batch_size = 128
  config.model.embed_dim = 16
  result = bench.bench(config, ["lightgcn", "heuristic"], repeats=1, epochs=1, scaling=[0.5, 2],
                       log=lambda s: None)
  json.dumps(result)  # serializable as written to bench.json
  lg = result["models"]["lightgcn"]
  for key in ("setup_seconds", "compile_seconds", "step_ms", "epoch_seconds", "eval_seconds", "peak_rss_mb"):
    assert lg[key] > 0, key
  assert lg["steps_per_epoch"] >= 1 and lg["eval_users"] > 0
  heuristic = result["models"]["heuristic"]  # not trainable: evaluation only
  assert "step_ms" not in heuristic and heuristic["eval_seconds"] > 0
  prop = result["propagation"]
  assert prop["edges"] > 0 and all(prop[k] > 0 for k in ("scipy_ms", "bcoo_ms", "segment_sum_ms"))
  assert set(prop["per_behavior"]) == {"view", "cart", "buy"}
  assert prop["edges"] == max(r["edges"] for r in prop["per_behavior"].values())
  for r in prop["per_behavior"].values():
    assert r["bcoo_vs_scipy"] == r["bcoo_ms"] / r["scipy_ms"]
  rows = result["scaling"]
  base = sum(prop["per_behavior"][b]["edges"] for b in ("view", "cart", "buy")) // 2  # adjacency: 2 per edge
  assert [r["multiple"] for r in rows] == [0.5, 2.0] and all(r["items"] == 60 for r in rows)
  for r in rows:  # within the pilot's users-per-edge estimate of the asked multiple
    assert 0.6 * r["multiple"] * base < r["edges"] < 1.6 * r["multiple"] * base
  assert rows[0]["steps_per_epoch"] == rows[1]["steps_per_epoch"] == lg["steps_per_epoch"]
  assert rows[1]["batch_size"] > rows[0]["batch_size"]
  assert all(r["epoch_seconds"] > 0 and r["step_ms"] > 0 for r in rows)
  assert isinstance(result["scaling_exponent"]["epoch_seconds"], float) and result["scaling_model"] == "lightgcn"
  assert result["device"]["platform"] == "cpu" and result["versions"]["jax"]
  table = bench.format_table(result)
  assert "| lightgcn |" in table and "| heuristic |" in table and "| view |" in table and "growth exponent" in table


def test_growth_exponent_recovers_a_power_law():
  rows = [{"edges": e, "t": 2.0 * e ** 1.5} for e in (100, 400, 1600)]
  assert bench.growth_exponent(rows, "t") == pytest.approx(1.5)
  assert bench.growth_exponent(rows[:1], "t") is None


def test_time_to_best_trains_the_run_as_configured(tmp_path):
  from hnt_jax.train.loop import train_and_evaluate
  from tests.train.test_loop import read_lines, small_config
  config = small_config(epochs=6, eval_every=2)
  result = bench.bench(config, ["lightgcn"], repeats=1, epochs=1, propagation=False, time_to_best=True,
                       log=lambda s: None)
  t = result["models"]["lightgcn"]["time_to_best"]
  plain = train_and_evaluate(small_config(epochs=6, eval_every=2), str(tmp_path / "plain"))
  assert t["best_epoch"] == plain["best_epoch"] and t["epochs_run"] == 6 and t["status"] == "completed"
  assert t["test"] == {k: v for k, v in plain["test"].items() if k.endswith("@10")}
  assert 0 < t["seconds_to_best"] < t["seconds_total"]
  # the plain run's own figure is the elapsed time recorded with its best epoch's evaluation
  best = [r for r in read_lines(tmp_path / "plain" / "metrics.jsonl") if r["epoch"] == plain["best_epoch"]]
  assert plain["timings"]["seconds_to_best"] == best[0]["elapsed_seconds"]
  assert "seconds to best" in bench.format_table(result)
