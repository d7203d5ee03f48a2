"""The epoch loop: sample, step, evaluate, stop early, checkpoint, resume, report.

`train_and_evaluate(config, workdir)` runs a whole experiment into `workdir`:
  config.json     the exact configuration
  metrics.jsonl   one line per evaluation (epoch, loss, validation metrics, seconds)
  checkpoints/    the two latest resumable states;  best/  the state with the best validation metric
  results.json    test (and validation) metrics of the best state, best epoch, timings, versions, device
Running the same command on an existing workdir resumes from its latest checkpoint; all randomness derives
from `config.seed` and the epoch number, so a resumed run ends bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics as stats_lib
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hnt_jax.data.dataset import Dataset
from hnt_jax.data.errors import ConfigError
from hnt_jax.evaluate import Evaluator, parse_ks
from hnt_jax.graph import Graphs, build_graphs
from hnt_jax.models import Recommender, get_model
from hnt_jax.train.checkpoint import Checkpoints, abstract_of
from hnt_jax.train.sampler import make_sampler, sample_epoch
from hnt_jax.train.step import TrainState, make_optimizer, make_train_step

Hook = Callable[[int, TrainState], None]  # called after each epoch's checkpoint


class TrainingDiverged(RuntimeError):
  """The loss or the parameters became non-finite."""


def _select_key(config) -> str:
  metric = config.train.select_metric
  name, _, k = metric.partition("@")
  if name not in ("hr", "ndcg", "recall") or not k.isdigit() or int(k) not in parse_ks(config.eval.ks):
    raise ConfigError(f"train.select_metric={metric!r} must be hr@K, ndcg@K or recall@K with K in "
                      f"eval.ks={config.eval.ks!r}")
  return metric


def _write_config(config, workdir: str) -> None:
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    for d in (saved, current):
      d.get("train", {}).pop("progress", None)
    if saved != current:
      diff = sorted(_flat(saved).items() ^ _flat(current).items())
      keys = sorted({k for k, _ in diff})
      raise ConfigError(f"workdir {workdir} holds a run with a different config (keys: {', '.join(keys)}); "
                        "use another --workdir to start a new run")
  with open(path, "w") as f:
    json.dump(json.loads(config.to_json_best_effort()), f, indent=2, sort_keys=True)


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = json.dumps(v)
  return out


def versions() -> dict[str, str]:
  import flax
  import optax
  import orbax.checkpoint
  import hnt_jax
  return {"hnt_jax": hnt_jax.__version__, "jax": jax.__version__, "jaxlib": jax.lib.__version__
          if hasattr(jax.lib, "__version__") else jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "orbax": orbax.checkpoint.__version__, "numpy": np.__version__,
          "python": platform.python_version()}


def device_info() -> dict[str, Any]:
  d = jax.devices()[0]
  return {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count()}


class Run:
  """Everything a run needs, built once from the config: data, graphs, model, evaluators."""

  def __init__(self, config: ml_collections.ConfigDict, ds: Optional[Dataset] = None,
               graphs: Optional[Graphs] = None):
    from hnt_jax.data.load import load_dataset
    self.config = config
    self.ds = ds if ds is not None else load_dataset(config.data)
    self.graphs = graphs if graphs is not None else build_graphs(self.ds)
    self.model: Recommender = get_model(config.model, self.ds.n_users, self.ds.n_items)
    model = self.model
    self.embed = jax.jit(lambda params, graphs: model.apply(params, graphs, method=model.embed))

    def score_fn(st, users):
      return model.apply(st["params"], st["graphs"], st["emb"], users, method=model.score)

    self.score_fn = score_fn
    self._evaluators: Optional[dict[str, Evaluator]] = None

  @property
  def evaluators(self) -> dict[str, Evaluator]:
    """One evaluator per held-out split the dataset has (built on first use)."""
    if self._evaluators is None:
      self._evaluators = {}
      for split in ("valid", "test"):
        if getattr(self.ds, split) is not None and len(self.ds.evaluated_users(split)):
          self._evaluators[split] = Evaluator(self.ds, split, self.config.eval, self.score_fn)
    return self._evaluators

  def init_params(self) -> Any:
    key = jax.random.PRNGKey(self.config.seed)
    b = int(self.config.train.batch_size)
    dummy = {k: jnp.zeros((b,), jnp.int32) for k in ("users", "pos", "neg")}
    return self.model.init({"params": key, "sample": key}, self.graphs, dummy, method=self.model.loss)

  def evaluate(self, params, split: str) -> dict[str, float]:
    emb = self.embed(params, self.graphs)
    return self.evaluators[split]({"params": params, "graphs": self.graphs, "emb": emb})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, hooks: Sequence[Hook] = (),
                       run: Optional[Run] = None) -> dict[str, Any]:
  """Trains (or resumes) the configured model in `workdir` and returns the contents of results.json."""
  select = _select_key(config)
  os.makedirs(workdir, exist_ok=True)
  _write_config(config, workdir)
  t_start = time.time()
  run = run or Run(config)
  t_setup = time.time() - t_start
  params = run.init_params()
  if not run.model.trainable:
    return _finish(run, workdir, params, best_epoch=0, epochs_run=0, status="evaluated",
                   timings={"setup_seconds": t_setup})

  tc = config.train
  tx = make_optimizer(tc)
  state = TrainState.create(apply_fn=run.model.apply, params=params, tx=tx)
  loop = {"epoch": 0, "best_value": -math.inf, "best_epoch": -1, "bad_evals": 0, "stopped": False}
  ckpt = Checkpoints(workdir)
  payload = _payload(state, loop)
  restored = ckpt.restore_latest(abstract_of(payload))
  if restored is not None:
    _, payload = restored
    state = state.replace(params=payload["params"], opt_state=payload["opt_state"], step=payload["step"])
    loop = {k: np.asarray(v).item() for k, v in payload["loop"].items()}
    print(f"resuming {workdir} after epoch {loop['epoch']}")
  ckpt.discard_after(int(loop["epoch"]))
  _truncate_metrics(workdir, int(loop["epoch"]))

  has_valid = "valid" in run.evaluators
  sampler = make_sampler(run.graphs.target, run.ds.n_items, tc.batch_size)
  train_step = make_train_step(run.model)
  base_key = jax.random.PRNGKey(config.seed)
  epoch_times = []
  progress = _progress(int(loop["epoch"]), int(tc.epochs), tc.progress)
  epoch = int(loop["epoch"])
  while epoch < tc.epochs and not loop["stopped"]:
    epoch += 1
    t0 = time.time()
    k_sample, k_steps = jax.random.split(jax.random.fold_in(base_key, epoch))
    batches = sample_epoch(sampler, k_sample)
    step_keys = jax.random.split(k_steps, sampler.steps)
    loss_sum, finite = jnp.float32(0.0), jnp.bool_(True)
    for s in range(sampler.steps):
      batch = {k: v[s] for k, v in batches.items()}
      state, metrics = train_step(state, run.graphs, batch, step_keys[s])
      loss_sum, finite = loss_sum + metrics["loss"], finite & metrics["finite"]
    loss = float(loss_sum) / sampler.steps
    seconds = time.time() - t0
    epoch_times.append(seconds)
    if not bool(finite) or not math.isfinite(loss):
      last = ckpt.latest.latest_step()
      ckpt.close()
      raise TrainingDiverged(
          f"training produced a non-finite loss, gradient or parameter in epoch {epoch}; stopped. "
          + (f"The last good checkpoint (epoch {last}) is kept in {os.path.join(workdir, 'checkpoints')}."
             if last is not None else "No checkpoint had been saved yet.")
          + " Lower train.learning_rate or check the data.")
    record = {"epoch": epoch, "loss": loss, "epoch_seconds": seconds}
    evaluated = has_valid and (epoch % tc.eval_every == 0 or epoch == tc.epochs)
    if evaluated:
      valid = run.evaluate(state.params, "valid")
      record["valid"] = valid
      improved = valid[select] > loop["best_value"]
      if improved:
        loop.update(best_value=valid[select], best_epoch=epoch, bad_evals=0)
      else:
        loop["bad_evals"] += 1
        if tc.patience and loop["bad_evals"] >= tc.patience:
          loop["stopped"] = True
      _append_metrics(workdir, record)
      progress.write(f"epoch {epoch}: loss {loss:.4f} | valid " + ", ".join(
          f"{k} {valid[k]:.4f}" for k in ("hr@10", "ndcg@10") if k in valid)
                     + (" (best)" if improved else ""))
    loop["epoch"] = epoch
    payload = _payload(state, loop)
    if evaluated and loop["best_epoch"] == epoch:
      ckpt.save_best(epoch, payload)
    if evaluated or epoch % tc.checkpoint_every == 0 or epoch == tc.epochs or loop["stopped"]:
      ckpt.save_latest(epoch, payload)
    progress.update(1)
    progress.set_postfix(loss=f"{loss:.4f}", steps_per_s=f"{sampler.steps / seconds:.1f}")
    for hook in hooks:
      hook(epoch, state)
  progress.close()

  best = ckpt.restore_best(abstract_of(_payload(state, loop))) if has_valid else None
  ckpt.close()
  if best is not None:
    best_epoch, best_payload = best
    params = best_payload["params"]
  else:  # no validation split: the last epoch is the result
    best_epoch, params = int(loop["epoch"]), state.params
  timings = {"setup_seconds": t_setup}
  if epoch_times:
    timings["first_epoch_seconds"] = epoch_times[0]
    timings["seconds_per_epoch"] = stats_lib.median(epoch_times[1:] or epoch_times)
  status = "early_stopped" if loop["stopped"] else "completed"
  return _finish(run, workdir, params, best_epoch=best_epoch, epochs_run=int(loop["epoch"]), status=status,
                 timings=timings)


def load_trained_params(run: Run, workdir: str) -> tuple[Any, int]:
  """The best checkpoint's parameters in `workdir` (the latest when the run had no validation split)."""
  params = run.init_params()
  if not run.model.trainable:
    return params, 0
  state = TrainState.create(apply_fn=run.model.apply, params=params, tx=make_optimizer(run.config.train))
  loop = {"epoch": 0, "best_value": 0.0, "best_epoch": 0, "bad_evals": 0, "stopped": False}
  ckpt = Checkpoints(workdir)
  abstract = abstract_of(_payload(state, loop))
  found = ckpt.restore_best(abstract) or ckpt.restore_latest(abstract)
  ckpt.close()
  if found is None:
    raise ConfigError(f"no checkpoint in {workdir}: train first with python -m hnt_jax.main --workdir {workdir}")
  epoch, payload = found
  return payload["params"], epoch


def _finish(run: Run, workdir: str, params, best_epoch: int, epochs_run: int, status: str,
            timings: dict) -> dict[str, Any]:
  t0 = time.time()
  results: dict[str, Any] = {}
  for split in run.evaluators:
    results[split] = run.evaluate(params, split)
  timings["final_eval_seconds"] = time.time() - t0
  config = run.config
  out = {"status": status, "model": config.model.name, "dataset": config.data.name, "seed": config.seed,
         "protocol": config.eval.protocol, "split": config.data.split, "select_metric":
         config.train.select_metric, "best_epoch": best_epoch, "epochs_run": epochs_run, **results,
         "timings": timings, "versions": versions(), "device": device_info()}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(out, f, indent=2, sort_keys=True)
  return out


def _payload(state: TrainState, loop: dict) -> dict:
  """What a checkpoint holds: the train state and the loop's own state (epoch, early stopping)."""
  return {"params": state.params, "opt_state": state.opt_state, "step": state.step,
          "loop": {k: jnp.asarray(v) for k, v in loop.items()}}


def _append_metrics(workdir: str, record: dict) -> None:
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps(record, sort_keys=True) + "\n")


def _truncate_metrics(workdir: str, epoch: int) -> None:
  """Drops lines written after the checkpoint we resume from (they will be written again)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip() and json.loads(line)["epoch"] <= epoch]
  with open(path, "w") as f:
    f.writelines(lines)


def _progress(initial: int, total: int, enabled: bool):
  from tqdm import tqdm
  return tqdm(total=total, initial=initial, disable=not enabled, unit="epoch", dynamic_ncols=True)
