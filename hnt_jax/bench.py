"""Benchmarks: compile time, train-step time, seconds per epoch, full-ranking evaluation, memory, propagation.

  python -m hnt_jax.bench --config configs/taobao.py --models hnt,lightgcn_g [--repeats 5] [--epochs 2]
      [--scaling 1,4,16] [--time_to_best] [--out bench.json] [--config.key=value ...]

Prints a table and writes `bench.json`:
  {"device": ..., "versions": ..., "dataset": ...,
   "models": {"<model>": {"setup_seconds" (the model's own tables: `Run` on the loaded data and graphs),
                          "compile_seconds", "step_ms", "step_ms_spread", "epoch_seconds", "eval_seconds",
                          "peak_rss_mb", "peak_device_mb", "steps_per_epoch",
                          with --time_to_best: "time_to_best": {"seconds_to_best", "best_epoch", "epochs_run",
                          "status", "seconds_total", "test": {...}}}},
   "propagation": {"scipy_ms", "bcoo_ms", "segment_sum_ms", "host_ms", "edges", "graph",
                   "per_behavior": {"<behavior>": {... "bcoo_vs_scipy", "segment_sum_vs_scipy",
                                                    "host_vs_scipy"}}},
   "scaling": [{"multiple", "users", "items", "edges", "batch_size", "steps_per_epoch", "step_ms", "epoch_seconds",
                "eval_seconds"}, ...], "scaling_model": ..., "scaling_exponent": {"step_ms", "epoch_seconds", ...}}
Times are medians over `repeats` runs after a warm-up; `*_spread` is max - min. Peak memory is the process's
high-water mark when the model's measurements end (it only grows, so later models include earlier ones).

`--time_to_best` also trains each model as the command line would (the config as given, in a temporary
workdir) and reports the wall seconds from the start of the run (setup and compilation included) to the
end of the best validation epoch's evaluation, with that epoch and the test metrics of its state.
"""
from __future__ import annotations

import copy
import json
import resource
import statistics
import sys
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np
import scipy.sparse as sp

from hnt_jax.graph import behavior_graph, propagate
from hnt_jax.host import host_threads
from hnt_jax.train.loop import run_epoch
from hnt_jax.train.setup import Run, graphs_from_config
from hnt_jax.train.records import device_info, versions
from hnt_jax.train.sampler import make_sampler, sample_epoch
from hnt_jax.train.step import TrainState, make_optimizer, make_train_step


def _timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
  """(median, spread) seconds of `fn()` (its result waited for) over `repeats` calls after one warm-up."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(max(1, repeats)):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), max(times) - min(times)


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_device_mb() -> Optional[float]:
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**20


def bench_model(run: Run, repeats: int, epochs: int) -> dict[str, float]:
  """Compile time, step time, seconds per epoch and test-evaluation time of the run's model."""
  config = run.config
  params, model_state = run.init_variables()
  out: dict[str, float] = {}
  if run.model.trainable:
    state = TrainState.create(apply_fn=run.model.apply, params=params, tx=make_optimizer(config.train))
    sampler = make_sampler(run.graphs.target, run.ds.n_items, config.train.batch_size)
    train_step = make_train_step(run.model)
    batches = sample_epoch(sampler, jax.random.PRNGKey(0))
    batch = {k: v[0] for k, v in batches.items()}
    key = jax.random.PRNGKey(1)
    t0 = time.perf_counter()
    state, metrics = train_step(state, model_state, run.graphs, batch, key)
    jax.block_until_ready(metrics["loss"])
    out["compile_seconds"] = time.perf_counter() - t0
    holder = {"state": state}

    def one_step():
      holder["state"], m = train_step(holder["state"], model_state, run.graphs, batch, key)
      return m["loss"]

    step, spread = _timed(one_step, repeats)
    out["step_ms"], out["step_ms_spread"] = 1e3 * step, 1e3 * spread
    out["steps_per_epoch"] = sampler.steps
    times = []
    for e in range(-1, max(1, epochs)):  # epoch -1 warms up (compiles the epoch sampler)
      t0 = time.perf_counter()
      holder["state"], _, _ = run_epoch(train_step, holder["state"], model_state, run.graphs, sampler,
                                        jax.random.PRNGKey(100 + e))
      if e >= 0:
        times.append(time.perf_counter() - t0)
    out["epoch_seconds"] = statistics.median(times)
    params = holder["state"].params
    if run.model.refresh_every:
      t0 = time.perf_counter()
      model_state = run.refresh(params, model_state)
      jax.block_until_ready(model_state)
      out["refresh_seconds"] = time.perf_counter() - t0
  split = "test" if "test" in run.evaluators else next(iter(run.evaluators), None)
  if split is not None:
    ev, ev_spread = _timed(lambda: run.evaluate(params, model_state, split), max(1, repeats // 2))
    out["eval_seconds"], out["eval_seconds_spread"] = ev, ev_spread
    out["eval_users"] = int(len(run.ds.evaluated_users(split)))
  out["peak_rss_mb"] = _peak_rss_mb()
  device_mb = _peak_device_mb()
  if device_mb is not None:
    out["peak_device_mb"] = device_mb
  return out


def _propagation_one(mat, n_nodes: int, repeats: int, dim: int) -> dict[str, float]:
  """One layer over `mat`'s graph: SciPy's CSR product on the host (the fixed reference), and three
  formulations of the project, each checked against it, with ratios to SciPy: the BCOO product, gather +
  segment_sum, and the host product `train.propagation=host` uses (SciPy over row blocks in parallel)."""
  host, dev = behavior_graph(mat, "host"), behavior_graph(mat, "bcoo")
  x = jax.random.normal(jax.random.PRNGKey(0), (n_nodes, dim))
  rows, cols = dev.adj.indices[:, 0], dev.adj.indices[:, 1]
  weights = dev.adj.data
  csr = sp.csr_matrix((np.asarray(weights), (np.asarray(rows), np.asarray(cols))), shape=dev.adj.shape)
  x_host = np.asarray(x)
  ref = csr @ x_host
  fns = {"bcoo": jax.jit(lambda x: propagate(dev, x)),
         "segment_sum": jax.jit(lambda x: jax.ops.segment_sum(weights[:, None] * x[cols], rows,
                                                             num_segments=n_nodes, indices_are_sorted=True)),
         "host": jax.jit(lambda x: propagate(host, x))}
  for fn in fns.values():
    np.testing.assert_allclose(np.asarray(fn(x)), ref, rtol=1e-4, atol=1e-5)
  out = {"edges": int(dev.adj.nse), "scipy_ms": 1e3 * _timed(lambda: csr @ x_host, repeats)[0]}
  for name, fn in fns.items():
    out[f"{name}_ms"] = 1e3 * _timed(lambda: fn(x), repeats)[0]
    out[f"{name}_vs_scipy"] = out[f"{name}_ms"] / out["scipy_ms"]
  out["host_threads"] = host_threads()
  return out


def bench_propagation(ds, repeats: int, dim: int = 64) -> dict:
  """One propagation layer over every behavior graph (SciPy host product, BCOO, gather + segment_sum), as
  times and ratios to SciPy; the top-level numbers are those of the largest graph."""
  n_nodes = ds.n_users + ds.n_items
  per = {b: _propagation_one(ds.train[b], n_nodes, repeats, dim) for b in ds.behaviors}
  largest = max(per, key=lambda b: per[b]["edges"])
  return {"graph": largest, **per[largest], "per_behavior": per}


def bench_scaling(config, model: str, multiples: Sequence[float], repeats: int, ds) -> list[dict[str, float]]:
  """Seconds per epoch and evaluation time of `model` on synthetic data with `multiples` of the edges of
  the dataset `ds`, on its catalogue (more users, same items, so a full ranking grows with the users).

  Each size keeps `ds`'s steps per epoch (the batch grows with the target pairs): a full-graph model then
  does the same number of whole-graph propagations per epoch at every size, and its epoch time grows with
  the edges rather than with their square. Users per edge come from a pilot generation."""
  from hnt_jax.data.synthetic import generate
  base_edges = sum(int(ds.train[b].nnz) for b in ds.behaviors)
  steps = -(-int(ds.train_target.nnz) // int(config.train.batch_size))

  def synthetic(users):
    cfg = copy.deepcopy(config)
    with cfg.unlocked():
      cfg.model.name = model
      cfg.data.synthetic.n_users, cfg.data.synthetic.n_items = int(users), int(ds.n_items)
    return cfg, generate(cfg.data.synthetic)

  pilot_users = 2000
  _, pilot = synthetic(pilot_users)
  per_user = sum(int(pilot.train[b].nnz) for b in pilot.behaviors) / pilot_users
  out = []
  for multiple in multiples:
    cfg, syn = synthetic(max(2, round(multiple * base_edges / per_user)))
    with cfg.unlocked():
      cfg.train.batch_size = -(-int(syn.train_target.nnz) // steps)
    run = Run(cfg, ds=syn)
    row = bench_model(run, repeats=repeats, epochs=1)
    out.append({"multiple": float(multiple), "users": int(syn.n_users), "items": int(syn.n_items),
                "edges": sum(int(syn.train[b].nnz) for b in syn.behaviors),
                "batch_size": int(cfg.train.batch_size), "steps_per_epoch": row.get("steps_per_epoch"),
                "step_ms": row.get("step_ms"), "epoch_seconds": row.get("epoch_seconds"),
                "eval_seconds": row.get("eval_seconds"), "eval_users": row.get("eval_users")})
  return out


def growth_exponent(rows: Sequence[dict], key: str) -> Optional[float]:
  """Least-squares slope of log(key) against log(edges): 1 means time grows linearly with the graph."""
  points = [(r["edges"], r[key]) for r in rows if r.get(key) and r["edges"] > 0]
  if len({e for e, _ in points}) < 2:
    return None
  x, y = np.log([e for e, _ in points]), np.log([t for _, t in points])
  return float(np.polyfit(x, y, 1)[0])


def bench_time_to_best(config) -> dict:
  """One whole training run of `config` in a temporary workdir: how long to its best validation state."""
  import tempfile

  from hnt_jax.train.loop import train_and_evaluate
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix="hnt_bench_") as workdir:
    results = train_and_evaluate(config, workdir)
  return {"seconds_to_best": results["timings"].get("seconds_to_best"), "best_epoch": results["best_epoch"],
          "epochs_run": results["epochs_run"], "status": results["status"],
          "seconds_total": time.perf_counter() - t0,
          "test": {k: v for k, v in results.get("test", {}).items() if k.endswith("@10")}}


def bench(config, models: Sequence[str], repeats: int = 5, epochs: int = 2,
          scaling: Sequence[float] = (), log: Callable[[str], None] = print, propagation: bool = True,
          time_to_best: bool = False) -> dict:
  """All measurements for `models` on the configured dataset (see the module docstring for the layout)."""
  from hnt_jax.config_checks import validate
  from hnt_jax.data.load import load_dataset
  validate(config)
  ds = load_dataset(config.data)
  graphs = graphs_from_config(config, ds)  # shared by every model (each adds its own tables)
  result = {"device": device_info(), "versions": versions(), "dataset": config.data.name,
            "propagation_mode": config.train.propagation, "models": {}}
  for name in models:
    cfg = copy.deepcopy(config)
    with cfg.unlocked():
      cfg.model.name = name
    log(f"benchmarking {name} ...")
    t0 = time.perf_counter()
    run = Run(cfg, ds=ds, graphs=graphs)
    setup = time.perf_counter() - t0
    result["models"][name] = {"setup_seconds": setup, **bench_model(run, repeats, epochs)}
    if time_to_best:
      log(f"training {name} to its best validation state ...")
      result["models"][name]["time_to_best"] = bench_time_to_best(cfg)
  if propagation:
    log("benchmarking one propagation layer ...")
    result["propagation"] = bench_propagation(ds, repeats)
  if scaling:
    log(f"benchmarking {models[0]} on synthetic data with {', '.join(map(str, scaling))} x the edges ...")
    result["scaling_model"] = models[0]
    result["scaling"] = bench_scaling(config, models[0], scaling, repeats, ds)
    result["scaling_exponent"] = {k: growth_exponent(result["scaling"], k)
                                  for k in ("step_ms", "epoch_seconds", "eval_seconds")}
  return result


def format_table(result: dict) -> str:
  d = result["device"]
  lines = [f"device: {d['platform']} ({d['kind']}, {d['count']} device(s)); dataset {result['dataset']}; "
           f"propagation {result['propagation_mode']}", "",
           "| model | setup s | compile s | step ms (spread) | steps/epoch | s/epoch | eval s | peak RSS MB "
           "| peak device MB |",
           "|---|---|---|---|---|---|---|---|---|"]
  fmt = lambda v, f: "-" if v is None else format(v, f)
  for name, r in result["models"].items():
    lines.append(f"| {name} | {fmt(r.get('setup_seconds'), '.1f')} | {fmt(r.get('compile_seconds'), '.1f')} "
                 f"| {fmt(r.get('step_ms'), '.1f')} "
                 f"({fmt(r.get('step_ms_spread'), '.1f')}) | {r.get('steps_per_epoch', '-')} | "
                 f"{fmt(r.get('epoch_seconds'), '.2f')} | {fmt(r.get('eval_seconds'), '.2f')} | "
                 f"{fmt(r.get('peak_rss_mb'), '.0f')} | {fmt(r.get('peak_device_mb'), '.0f')} |")
  trained = {name: r["time_to_best"] for name, r in result["models"].items() if "time_to_best" in r}
  if trained:
    lines += ["", "time to a trained model (one whole run as configured, setup and compilation included):", "",
              "| model | seconds to best | best epoch | epochs run | status | run seconds | test HR@10 | test NDCG@10 |",
              "|---|---:|---:|---:|---|---:|---:|---:|"]
    for name, t in trained.items():
      lines.append(f"| {name} | {fmt(t['seconds_to_best'], '.1f')} | {t['best_epoch']} | {t['epochs_run']} | "
                   f"{t['status']} | {t['seconds_total']:.1f} | {fmt(t['test'].get('hr@10'), '.4f')} | "
                   f"{fmt(t['test'].get('ndcg@10'), '.4f')} |")
  p = result.get("propagation")
  if p:
    lines += ["", "one propagation layer (d=64), each formulation checked against SciPy:", "",
              "| graph | adjacency entries | SciPy ms | BCOO ms (x SciPy) | gather+segment_sum ms (x SciPy) "
              "| host blocks ms (x SciPy) |", "|---|---:|---:|---:|---:|---:|"]
    for b, r in p["per_behavior"].items():
      lines.append(f"| {b} | {r['edges']:,} | {r['scipy_ms']:.1f} | {r['bcoo_ms']:.1f} "
                   f"({r['bcoo_vs_scipy']:.2f}) | {r['segment_sum_ms']:.1f} ({r['segment_sum_vs_scipy']:.2f}) "
                   f"| {r['host_ms']:.1f} ({r['host_vs_scipy']:.2f}) |")
  if result.get("scaling"):
    lines += ["", f"scaling ({result.get('scaling_model')}, synthetic data on the dataset's catalogue, same steps "
              "per epoch):", "",
              "| x edges | users | training edges | batch | step ms | s/epoch | eval s |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["scaling"]:
      lines.append(f"| {r['multiple']:g} | {r['users']:,} | {r['edges']:,} | {r['batch_size']:,} | "
                   f"{fmt(r['step_ms'], '.1f')} | {fmt(r['epoch_seconds'], '.2f')} | {fmt(r['eval_seconds'], '.2f')} |")
    exp = result.get("scaling_exponent", {})
    lines += ["", "growth exponent (slope of log time on log edges): "
              f"step {fmt(exp.get('step_ms'), '.2f')}, epoch {fmt(exp.get('epoch_seconds'), '.2f')}, "
              f"evaluation {fmt(exp.get('eval_seconds'), '.2f')}"]
  return "\n".join(lines)


def main_cli():
  from absl import app, flags
  from ml_collections import config_flags

  from hnt_jax import config as config_lib
  from hnt_jax.cli import main_with_clean_errors

  config = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).")
  models = flags.DEFINE_string("models", "hnt,lightgcn_g", "Comma-separated model names.")
  repeats = flags.DEFINE_integer("repeats", 5, "Timed repetitions after warm-up (medians are reported).")
  epochs = flags.DEFINE_integer("epochs", 2, "Whole epochs timed per model.")
  scaling = flags.DEFINE_string("scaling", "", "Comma-separated multiples of the dataset's training edges for "
                                "synthetic scaling rows (e.g. 1,4,16), timed with the first model.")
  out = flags.DEFINE_string("out", "bench.json", "Where to write the JSON result.")
  prop = flags.DEFINE_bool("propagation", True, "Also time one propagation layer three ways.")
  to_best = flags.DEFINE_bool("time_to_best", False, "Also train each model as configured and report the "
                              "seconds to its best validation state.")
  flags.mark_flags_as_required(["config"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    sizes = [float(s) for s in scaling.value.split(",") if s.strip()]
    names = [m.strip() for m in models.value.split(",") if m.strip()]
    result = bench(config.value, names, repeats.value, epochs.value, sizes, propagation=prop.value,
                   time_to_best=to_best.value)
    print(format_table(result))
    with open(out.value, "w") as f:
      json.dump(result, f, indent=2, sort_keys=True)
    print(f"\nwritten: {out.value}")

  main_with_clean_errors(lambda: (config_lib.check_command_line(sys.argv[1:]), app.run(main)))


if __name__ == "__main__":
  main_cli()
