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

import math
import os
import statistics as stats_lib
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hnt_jax import distributed
from hnt_jax.config_checks import select_metric, validate
from hnt_jax.errors import WorkdirError
from hnt_jax.graph import Graphs
from hnt_jax.train import records
from hnt_jax.train.checkpoint import Checkpoints, abstract_of
from hnt_jax.train.early_stopping import EarlyStopping
from hnt_jax.train.sampler import make_sampler, sample_epoch
from hnt_jax.train.setup import Run
from hnt_jax.train.step import ExtraLoss, TrainState, make_optimizer

Hook = Callable[[int, TrainState], None]  # called after each epoch's checkpoint


class TrainingDiverged(RuntimeError):
  """The loss or the parameters became non-finite."""


def run_epoch(train_step, state: TrainState, model_state: dict, graphs: Graphs, sampler,
              key: jax.Array, mesh=None) -> tuple[TrainState, dict[str, float], bool]:
  """One epoch of `train_step` over a fresh sample from `key`: (state, the mean over steps of the loss and
  of each of its parts, all steps finite).

  On a mesh each batch is split over `data`; every process samples the same epoch from the same key and
  transfers only its devices' share of each batch."""
  k_sample, k_steps = jax.random.split(key)
  batches = sample_epoch(sampler, k_sample)
  if mesh is not None:
    batches = jax.device_get(batches)
    split = distributed.rows_sharding(mesh)
  step_keys = jax.random.split(k_steps, sampler.steps)
  sums, finite = None, jnp.bool_(True)
  for s in range(sampler.steps):
    batch = {k: v[s] for k, v in batches.items()}
    if mesh is not None:
      batch = {k: distributed.put_global(v, split) for k, v in batch.items()}
    state, metrics = train_step(state, model_state, graphs, batch, step_keys[s])
    finite = finite & metrics.pop("finite")
    sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
  means = {k: float(v) / sampler.steps for k, v in jax.device_get(sums).items()}
  return state, means, bool(finite)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, hooks: Sequence[Hook] = (),
                       run: Optional[Run] = None, extra_loss: Optional[ExtraLoss] = None) -> dict[str, Any]:
  """Trains (or resumes) the configured model in `workdir` and returns the contents of results.json.

  `hooks` are called after every epoch's checkpoint as `hook(epoch, state)`; `extra_loss` is a term added to
  the model's loss in every step (see `make_train_step`). Every setting is checked before anything is read
  or written; the workdir is locked against a second run for as long as this one lasts."""
  validate(config)
  distributed.maybe_initialize(config.mesh)
  if not distributed.is_main_process():
    return _train(config, workdir, hooks, run, extra_loss)
  with records.WorkdirLock(workdir):
    return _train(config, workdir, hooks, run, extra_loss)


def _train(config, workdir: str, hooks: Sequence[Hook], run: Optional[Run], extra_loss) -> dict[str, Any]:
  select = select_metric(config)
  main = distributed.is_main_process()
  os.makedirs(workdir, exist_ok=True)
  ckpt = Checkpoints(workdir)
  ckpt.latest.reload()
  if main:  # a workdir of another run is refused before any data loads
    records.check_config(config, workdir, has_checkpoint=bool(ckpt.latest.all_steps()))
  t_start = time.time()
  records.package_commit()  # the source this run starts from, which its results will name
  run = run or Run(config)
  tc = config.train
  has_valid = "valid" in run.evaluators and bool(tc.validate)  # builds the evaluators: checks n_negatives
  distributed.check_batch_size(run.mesh, int(tc.batch_size))
  if main:  # written only once every setting has passed its checks
    records.write_config(config, workdir)
  t_setup = time.time() - t_start
  params, model_state = run.init_variables()
  t_init = time.time() - t_start - t_setup
  if not run.model.trainable:
    ckpt.close()
    return _finish(run, workdir, params, model_state, best_epoch=0, epochs_run=0, status="evaluated",
                   timings={"setup_seconds": t_setup})

  sampler = make_sampler(run.graphs.target, run.ds.n_items, tc.batch_size)
  tx = make_optimizer(tc, sampler.steps)
  state = run.place_state(TrainState.create(apply_fn=run.model.apply, params=params, tx=tx))
  stop = EarlyStopping(int(tc.patience))
  restored = ckpt.restore_latest(abstract_of(_payload(state, model_state, stop)))
  if restored is not None:
    _, payload = restored
    state = state.replace(params=payload["params"], opt_state=payload["opt_state"], step=payload["step"])
    model_state = payload["model_state"]
    stop = EarlyStopping.from_arrays(int(tc.patience), payload["loop"])
    if main:
      print(f"resuming {workdir} after epoch {stop.epoch}")
  ckpt.discard_after(stop.epoch)
  if main:
    records.truncate_metrics(workdir, stop.epoch)

  scalars = records.Scalars(workdir, enabled=bool(tc.tensorboard) and main, resume_epoch=stop.epoch)
  try:
    last_valid = "-"
    train_step = run.train_step(state, extra_loss)
    refresh_every = run.model.refresh_every
    base_key = jax.random.PRNGKey(config.seed)
    epoch_times = []
    progress = _progress(stop.epoch, int(tc.epochs), tc.progress and main)
    epoch = stop.epoch
    time_limit = float(tc.time_limit_minutes) * 60.0
    out_of_time = False
    # wall time from the start of the run (setup and compilation included) to the end of the best epoch's
    # evaluation; unknown (None) for a resumed run, whose earlier invocations' time is not kept
    fresh, seconds_to_best = stop.epoch == 0, None
    while epoch < tc.epochs and not stop.stopped and not out_of_time:
      epoch += 1
      t0 = time.time()
      state, parts, finite = run_epoch(train_step, state, model_state, run.graphs, sampler,
                                       jax.random.fold_in(base_key, epoch), run.mesh)
      loss = parts.pop("loss")
      if not finite or not math.isfinite(loss):
        last = ckpt.latest.latest_step()
        ckpt.close()
        raise TrainingDiverged(
            f"training produced a non-finite loss, gradient or parameter in epoch {epoch}; stopped. "
            + (f"The last good checkpoint (epoch {last}) is kept in {os.path.join(workdir, 'checkpoints')}."
               if last is not None else "No checkpoint had been saved yet.")
            + " Lower train.learning_rate or check the data.")
      if refresh_every and epoch % refresh_every == 0:
        model_state = run.refresh(state.params, model_state)
      seconds = time.time() - t0
      epoch_times.append(seconds)
      record = {"epoch": epoch, "loss": loss, "epoch_seconds": seconds}
      if parts:
        record["loss_parts"] = parts
      scalars.write(epoch, "train", dict(loss=loss, epoch_seconds=seconds,
                                         steps_per_second=sampler.steps / seconds, **parts))
      evaluated = has_valid and (epoch % tc.eval_every == 0 or epoch == tc.epochs)
      if evaluated:
        valid = run.evaluate(state.params, model_state, "valid")
        record["valid"] = valid
        diagnostics = run.diagnostics(state.params, model_state, "valid")
        if diagnostics:
          record["diagnostics"] = diagnostics
        scalars.write(epoch, "valid", valid)
        scalars.write(epoch, "diagnostics", diagnostics)
        last_valid = f"{valid[select]:.4f}"
        improved = stop.update(epoch, valid[select])
        record["elapsed_seconds"] = time.time() - t_start  # since this invocation started (setup included)
        if improved and fresh:
          seconds_to_best = record["elapsed_seconds"]
        if main:
          records.append_metrics(workdir, record)
          progress.write(f"epoch {epoch}: loss {loss:.4f} | valid " + ", ".join(
              f"{k} {valid[k]:.4f}" for k in ("hr@10", "ndcg@10") if k in valid)
                         + (" (best)" if improved else "") + _format_diagnostics(diagnostics))
      stop.epoch = epoch
      # the time limit is a property of this invocation, not of the run: it is not saved, so running the
      # same command again resumes from here (process 0's clock decides for every process)
      out_of_time = distributed.agree(time_limit > 0 and time.time() - t_start > time_limit)
      payload = _payload(state, model_state, stop)
      if evaluated and stop.best_epoch == epoch:
        ckpt.save_best(epoch, payload)
      if (evaluated or epoch % tc.checkpoint_every == 0 or epoch == tc.epochs or stop.stopped
          or out_of_time):
        ckpt.save_latest(epoch, payload)
        scalars.flush()
      progress.update(1)
      progress.set_postfix({"loss": f"{loss:.4f}", f"valid {select}": last_valid,
                            "steps/s": f"{sampler.steps / seconds:.1f}"})
      for hook in hooks:
        hook(epoch, state)
    progress.close()

    try:
      best = None
      if has_valid and stop.best_epoch >= 1:
        best = ckpt.restore_recorded_best(abstract_of(_payload(state, model_state, stop)), stop.best_epoch)
    finally:
      ckpt.close()
    if best is not None:
      best_epoch, best_payload = best
      params, model_state = best_payload["params"], best_payload["model_state"]
    else:  # no validation split: the last epoch is the result
      best_epoch, params = stop.epoch, state.params
    timings = {"setup_seconds": t_setup, "init_seconds": t_init}
    if has_valid:
      timings["seconds_to_best"] = seconds_to_best
    if epoch_times:
      timings["first_epoch_seconds"] = epoch_times[0]
      timings["seconds_per_epoch"] = stats_lib.median(epoch_times[1:] or epoch_times)
    status = ("early_stopped" if stop.stopped else
              "time_limit" if out_of_time and epoch < tc.epochs else "completed")
    out = _finish(run, workdir, params, model_state, best_epoch=best_epoch, epochs_run=stop.epoch,
                  status=status, timings=timings)
    scalars.write(best_epoch, "test", out.get("test", {}))  # at the step of the state they measure
    return out
  finally:  # also when interrupted: the events so far are kept
    scalars.close()


def _format_diagnostics(diagnostics: dict) -> str:
  if not diagnostics:
    return ""
  short = {"hesitation_coverage": "hes cov", "hesitation_precision": "hes prec",
           "random_precision": "random prec", "score_std": "score std"}
  parts = [f"{short.get(k, k)} {v:.3f}" for k, v in diagnostics.items() if k != "hesitation_size"]
  return " | " + ", ".join(parts)


def load_trained_params(run: Run, workdir: str) -> tuple[Any, dict, int]:
  """(params, model_state, epoch) of the state a run reports: the epoch its saved loop state records as best
  (the latest without validation)."""
  params, model_state = run.init_variables()
  if not run.model.trainable:
    return params, model_state, 0
  state = TrainState.create(apply_fn=run.model.apply, params=params, tx=make_optimizer(run.config.train))
  ckpt = Checkpoints(workdir)
  abstract = abstract_of(_payload(state, model_state, EarlyStopping(0)))
  try:
    found = ckpt.restore_latest(abstract)
    if found is None:
      raise WorkdirError(f"no checkpoint: train first with python -m hnt_jax.main --workdir {workdir}",
                         workdir)
    best_epoch = int(np.asarray(found[1]["loop"]["best_epoch"]))
    if best_epoch >= 1:
      found = ckpt.restore_recorded_best(abstract, best_epoch)
  finally:
    ckpt.close()
  epoch, payload = found
  return payload["params"], payload["model_state"], epoch


def _finish(run: Run, workdir: str, params, model_state: dict, best_epoch: int, epochs_run: int, status: str,
            timings: dict) -> dict[str, Any]:
  t0 = time.time()
  results: dict[str, Any] = {}
  for split in run.evaluators:
    results[split] = run.evaluate(params, model_state, split)
    diagnostics = run.diagnostics(params, model_state, split)
    if diagnostics:
      results[f"{split}_diagnostics"] = diagnostics
  timings["final_eval_seconds"] = time.time() - t0
  config = run.config
  out = {"status": status, "model": config.model.name, "dataset": config.data.name, "seed": config.seed,
         "protocol": config.eval.protocol, "split": config.data.split, "select_metric":
         config.train.select_metric, "best_epoch": best_epoch, "epochs_run": epochs_run, **results,
         "timings": timings, "versions": records.versions(), "device": records.device_info(run.mesh)}
  if distributed.is_main_process():
    records.write_json(os.path.join(workdir, "results.json"), out)
  return out


def _payload(state: TrainState, model_state: dict, stop: EarlyStopping) -> dict:
  """What a checkpoint holds: the train state, the model's other state, the loop's state."""
  return {"params": state.params, "opt_state": state.opt_state, "step": state.step,
          "model_state": model_state, "loop": stop.arrays()}


def _progress(initial: int, total: int, enabled: bool):
  from tqdm import tqdm
  return tqdm(total=total, initial=initial, disable=not enabled, unit="epoch", dynamic_ncols=True)
