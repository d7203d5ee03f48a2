"""The benchmark suite: the JSON layout tools rely on, positive timings, and the propagation cross-check."""
import json

from hnt_jax import bench
from hnt_jax.config import base_config


def test_bench_reports_every_field_for_each_model_and_propagation():
  config = base_config()
  config.data.synthetic.update(n_users=80, n_items=60)
  config.train.batch_size = 128
  config.model.embed_dim = 16
  result = bench.bench(config, ["lightgcn", "heuristic"], repeats=1, epochs=1, scaling=[40], log=lambda s: None)
  json.dumps(result)  # serializable as written to bench.json
  lg = result["models"]["lightgcn"]
  for key in ("compile_seconds", "step_ms", "epoch_seconds", "eval_seconds", "peak_rss_mb"):
    assert lg[key] > 0, key
  assert lg["steps_per_epoch"] >= 1 and lg["eval_users"] > 0
  heuristic = result["models"]["heuristic"]  # not trainable: evaluation only
  assert "step_ms" not in heuristic and heuristic["eval_seconds"] > 0
  prop = result["propagation"]
  assert prop["edges"] > 0 and all(prop[k] > 0 for k in ("scipy_ms", "bcoo_ms", "segment_sum_ms"))
  (row,) = result["scaling"]
  assert row["users"] == 40 and row["edges"] > 0 and row["epoch_seconds"] > 0
  assert result["device"]["platform"] == "cpu" and result["versions"]["jax"]
  table = bench.format_table(result)
  assert "| lightgcn |" in table and "| heuristic |" in table and "SciPy host" in table
