"""What a training run is built from, the same way for training, `--mode stats`, benchmarks and
recommendations: the dataset, its graphs (`graphs_from_config`) with the model's own tables
(`with_model_extras`), the model, and the jitted functions and evaluators around them (`Run`).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
from flax.core import DenyList

from hnt_jax import distributed
from hnt_jax.config_checks import validate
from hnt_jax.data.dataset import Dataset
from hnt_jax.evaluate import Evaluator
from hnt_jax.graph import Graphs, build_graphs
from hnt_jax.models import Recommender, get_model
from hnt_jax.train.step import ExtraLoss, TrainState, make_train_step


def graphs_from_config(config: ml_collections.ConfigDict, ds: Dataset, mesh=None) -> Graphs:
  """The graphs of `ds` with the propagation backend and dtype `config.train` names."""
  return build_graphs(ds, propagation=config.train.propagation, mesh=mesh,
                      dtype=config.train.propagation_dtype)


def with_model_extras(graphs: Graphs, model: Recommender, ds: Dataset, weak_signals: bool = False) -> Graphs:
  """`graphs` with the tables `model` reads besides the graphs (`Recommender.graph_extras`), and the
  weak-signal tables when `weak_signals` asks for them; tables already there are kept."""
  extras = {k: v for k, v in model.graph_extras(ds).items() if getattr(graphs, k) is None}
  if weak_signals and graphs.weak is None and "weak" not in extras and ds.auxiliary:
    from hnt_jax.signals import weak_signals as build
    extras["weak"] = build(ds)
  return graphs.replace(**extras) if extras else graphs


class Run:
  """Everything a training run needs, built once from the config: data, graphs, model, evaluators.

  `weak_signals=True` adds the weak-signal tables (`graphs.weak`) for an extra loss that reads them; models
  that read them themselves (HNT) get them anyway.

  Model variables are split into `params` (trained) and `model_state` (other Flax collections, such as
  HNT's hesitation sets); functions here take `variables = {"params": params, **model_state}`.
  """

  def __init__(self, config: ml_collections.ConfigDict, ds: Optional[Dataset] = None,
               graphs: Optional[Graphs] = None, weak_signals: bool = False):
    from hnt_jax.data.load import load_dataset
    validate(config)
    self.config = config
    self.mesh = distributed.make_mesh(config.mesh)
    self.ds = ds if ds is not None else load_dataset(config.data)
    self.model: Recommender = get_model(config.model, self.ds.n_users, self.ds.n_items,
                                        len(self.ds.behaviors))
    graphs = graphs if graphs is not None else graphs_from_config(config, self.ds, self.mesh)
    self.graphs = with_model_extras(graphs, self.model, self.ds, weak_signals)
    if self.mesh is not None and self.graphs.weak is not None:
      from hnt_jax.signals import split_by_users
      self.graphs = self.graphs.replace(weak=split_by_users(self.graphs.weak, self.mesh))
    model = self.model
    # jitted: op by op, the loss `init` traces runs as hundreds of small compilations (docs/performance.md);
    # the values are the same either way (`models.base.normal_init`)
    self._init = jax.jit(lambda key, graphs, batch: model.init({"params": key, "sample": key}, graphs, batch,
                                                               method=model.loss))
    self.embed = jax.jit(lambda variables, graphs: model.apply(variables, graphs, method=model.embed))
    self._refresh = jax.jit(lambda variables, graphs: model.apply(
        variables, graphs, method=model.refresh, mutable=DenyList("params"))[1])
    self._diagnostics = jax.jit(lambda variables, graphs, truth, users: model.apply(
        variables, graphs, truth, users, method=model.diagnostics))

    def score_fn(st, users):
      return model.apply(st["variables"], st["graphs"], st["emb"], users, method=model.score)

    self.score_fn = score_fn
    self._evaluators: Optional[dict[str, Evaluator]] = None
    self._train_steps: dict[Any, Callable] = {}

  @property
  def evaluators(self) -> dict[str, Evaluator]:
    """One evaluator per held-out split the dataset has (built on first use)."""
    if self._evaluators is None:
      self._evaluators = {}
      for split in ("valid", "test"):
        if getattr(self.ds, split) is not None and len(self.ds.evaluated_users(split)):
          self._evaluators[split] = Evaluator(self.ds, split, self.config.eval, self.score_fn, mesh=self.mesh)
    return self._evaluators

  def init_variables(self) -> tuple[Any, dict]:
    """(params, model_state) from `config.seed`."""
    key = jax.random.PRNGKey(self.config.seed)
    b = int(self.config.train.batch_size)
    dummy = {k: jnp.zeros((b,), jnp.int32) for k in ("users", "pos", "neg")}
    variables = self._init(key, self.graphs, dummy)
    variables = dict(variables)
    params = variables.pop("params", {})
    if self.mesh is not None:
      params = jax.device_put(params, distributed.param_shardings(params, self.mesh, self.ds.n_users,
                                                                  self.ds.n_items))
      variables = jax.device_put(variables, distributed.replicated(self.mesh))
    return params, variables

  def train_step(self, state: TrainState, extra_loss: Optional[ExtraLoss] = None) -> Callable:
    """The jitted train step for `state`'s layout (built once per run and extra loss, so a Run reused for
    several trainings compiles it once)."""
    if extra_loss not in self._train_steps:
      shardings = jax.tree.map(lambda x: x.sharding, state) if self.mesh is not None else None
      self._train_steps[extra_loss] = make_train_step(self.model, shardings, extra_loss)
    return self._train_steps[extra_loss]

  def place_state(self, state: TrainState) -> TrainState:
    """The train state laid out on the mesh (parameters and their optimizer moments sharded alike)."""
    if self.mesh is None:
      return state
    return jax.device_put(state, distributed.state_shardings(state, self.mesh, self.ds.n_users,
                                                             self.ds.n_items))

  def refresh(self, params, model_state: dict) -> dict:
    """The model's non-parameter state recomputed from `params` (e.g. hesitation sets)."""
    if not model_state:
      return model_state
    return dict(self._refresh({"params": params, **model_state}, self.graphs))

  def evaluate(self, params, model_state: dict, split: str) -> dict[str, float]:
    variables = {"params": params, **model_state}
    emb = self.embed(variables, self.graphs)
    return self.evaluators[split]({"variables": variables, "graphs": self.graphs, "emb": emb})

  def diagnostics(self, params, model_state: dict, split: str) -> dict[str, float]:
    ev = self.evaluators[split]
    users = jnp.asarray(self.ds.evaluated_users(split), jnp.int32)
    out = self._diagnostics({"params": params, **model_state}, self.graphs, ev.truth, users)
    return {k: float(v) for k, v in jax.device_get(out).items()}
