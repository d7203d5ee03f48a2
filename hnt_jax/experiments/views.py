"""Does a model train on the rows evaluation will show it? The training view of a purchase (its pair
evidence with the purchase left out, in the row of its loss) against its evaluation view (the data rebuilt
without the purchase, as a held-out item is scored).

  python -m hnt_jax.experiments.views --workdir DIR [--pairs 1000] [--seed 1] [--epochs 8,40]

`DIR` is a trained `pair_ranker` run. For `--pairs` training purchases (one per user, distinct items, users
with two or more purchases, drawn with `--seed`) it prints

* per feature group, the share of pairs whose training-view features differ from the evaluation view
  (model-free: leave-one-out is exact for a group where this is 0);
* per checkpoint (the recorded best and the latest, or `--epochs`), the purchase's NLL (softmax over all
  items, the user's other purchases masked) and HR@10 in each view, the gap with its standard error;
* at the latest checkpoint, the same figures with one feature group of the purchase swapped into its
  evaluation-view values: a group whose swap moves them is one the model reads differently in training.

A model whose training view scores its purchases better than the evaluation view learns something that
held-out items do not have: its validation curve falls while its training loss keeps improving.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from hnt_jax.data.dataset import Dataset, binary_csr
from hnt_jax.models import evidence
from hnt_jax.signals import WeakSignals, weak_signals


def feature_groups(n_aux: int) -> dict[str, list[int]]:
  """Column ranges of `evidence.features` (K-1 = n_aux auxiliary behaviors), by what they hold."""
  k = n_aux
  sizes = [("item purchases", 1), ("item conversion shares", k), ("item users per behavior", k),
           ("in A_u", 1), ("user flags", k), ("user activity", k), ("|A_u|", 1), ("user conversion share", 1),
           ("rank by purchases", 1), ("rank by conversion shares", k), ("rank by cross counts", k + 1),
           ("cross counts", k + 1)]
  groups, start = {}, 0
  for name, size in sizes:
    groups[name] = list(range(start, start + size))
    start += size
  assert start == evidence.n_features(k)
  return groups


def sample_purchases(ds: Dataset, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Up to n training purchases (users, items): one per user, distinct items, users with two or more."""
  target = sp.csr_matrix(ds.train_target)
  users, items = target.nonzero()
  per_user = np.diff(target.indptr)
  seen_users, seen_items, picked = set(), set(), []
  for p in np.random.default_rng(seed).permutation(len(users)):
    u, i = int(users[p]), int(items[p])
    if u not in seen_users and i not in seen_items and per_user[u] > 1:
      seen_users.add(u)
      seen_items.add(i)
      picked.append(p)
      if len(picked) == n:
        break
  picked = np.asarray(picked, dtype=np.int64)
  return users[picked].astype(np.int32), items[picked].astype(np.int32)


def without_purchases(ds: Dataset, users: np.ndarray, items: np.ndarray) -> Dataset:
  """The dataset whose training target never had these purchases."""
  held = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=ds.train_target.shape)
  train = dict(ds.train)
  train[ds.target] = binary_csr(ds.train_target - held)
  return dataclasses.replace(ds, train=train)


def feature_views(weak: WeakSignals, weak_without: WeakSignals, users, items) -> tuple[jax.Array, jax.Array]:
  """x of each purchase (users [B], items [B]) as its loss row sees it (left out of `weak`) and as
  evaluation sees it (`weak_without`: the tables of `without_purchases`), [B, n_features] each."""
  users, items = jnp.asarray(users), jnp.asarray(items)[:, None]
  known, values = evidence.lookup(weak, users, items, purchases=True)
  train = evidence.features(weak, users, items, known, values, jnp.ones(items.shape), items[:, 0])
  known, values = evidence.lookup(weak_without, users, items)
  held = evidence.features(weak_without, users, items, known, values, jnp.zeros(items.shape))
  return train[:, 0], held[:, 0]


def mismatch(x_train: jax.Array, x_eval: jax.Array, n_aux: int, atol: float = 1e-4) -> dict[str, float]:
  """Per feature group, the share of pairs whose two views differ by more than `atol` in any column."""
  diff = np.abs(np.asarray(x_train) - np.asarray(x_eval))
  return {name: float(np.mean(diff[:, cols].max(axis=1) > atol)) for name, cols in feature_groups(n_aux).items()}


@dataclasses.dataclass
class Views:
  """Both views of the same purchases: the datasets, their weak-signal tables, the purchases."""
  ds: Dataset
  weak: WeakSignals
  ds_without: Dataset
  weak_without: WeakSignals
  users: np.ndarray
  items: np.ndarray

  @classmethod
  def build(cls, ds: Dataset, weak: WeakSignals, max_candidates: int, cf_candidates: int, n: int, seed: int):
    return cls.of(ds, weak, max_candidates, cf_candidates, *sample_purchases(ds, n, seed))

  @classmethod
  def of(cls, ds: Dataset, weak: WeakSignals, max_candidates: int, cf_candidates: int, users, items):
    """The views of the given training purchases (users [B], items [B])."""
    users, items = np.asarray(users, np.int32), np.asarray(items, np.int32)
    without = without_purchases(ds, users, items)
    weak_without = evidence.with_evidence_tables(weak_signals(without, max_candidates, cf_candidates))
    # both views are scored by the trained scorer, which standardizes by the training data's moments
    weak_without = weak_without.replace(feature_mean=weak.feature_mean, feature_std=weak.feature_std)
    return cls(ds, weak, without, weak_without, users, items)

  def row_scores(self, scorer) -> dict[str, np.ndarray]:
    """Scores over all items of each purchase's row, the user's other purchases at -inf: in the training
    view (the loss row) and in the evaluation view, [B, N] each."""
    users, items = jnp.asarray(self.users), jnp.asarray(self.items)
    rows = np.arange(len(self.users))
    out = {}
    for view, ds, weak in (("train", self.ds, self.weak), ("eval", self.ds_without, self.weak_without)):
      left_out = items if view == "train" else None
      base = jnp.broadcast_to(evidence.item_scores(scorer, weak)[None], (len(rows), ds.n_items))
      scores = np.array(evidence.scatter_candidates(weak, base, evidence.candidate_scores(scorer, weak, users,
                                                                                         left_out), users))
      if view == "train":
        scores[rows, self.items] = np.asarray(evidence.purchase_scores(scorer, weak, users, items))
      bought = ds.train_target[self.users].toarray() > 0
      bought[rows, self.items] = False
      out[view] = np.where(bought, -np.inf, scores)
    return out

  def purchase_metrics(self, scores: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per purchase, its NLL (softmax over its row of `scores`) and whether it ranks in the top k."""
    own = scores[np.arange(len(self.users)), self.items]
    nll = np.asarray(jax.nn.logsumexp(jnp.asarray(scores), axis=1)) - own
    return nll, (scores > own[:, None]).sum(axis=1) < k

  def gap(self, scorer, k: int = 10) -> dict[str, float]:
    """The purchase's NLL and HR@k in each view, and the NLL gap (evaluation minus training) ± its
    standard error."""
    res, nll = {}, {}
    for view, scores in self.row_scores(scorer).items():
      nll[view], hit = self.purchase_metrics(scores, k)
      res[f"nll_{view}"], res[f"hr_{view}"] = float(nll[view].mean()), float(hit.mean())
    d = nll["eval"] - nll["train"]
    res["gap"], res["gap_se"] = float(d.mean()), float(d.std() / np.sqrt(len(d)))
    return res

  def swapped(self, scorer, x_train: jax.Array, x_eval: jax.Array, k: int = 10) -> dict[str, tuple[float, float]]:
    """Per feature group, the training view's (NLL, HR@k) of the purchases with that group of their
    features (`feature_views`) set to its evaluation-view values, the rest of the row unchanged."""
    train = self.row_scores(scorer)["train"]
    rows = np.arange(len(self.users))
    out = {}
    for name, cols in feature_groups(evidence.n_aux(self.weak)).items():
      cols = jnp.asarray(cols)
      scores = train.copy()
      scores[rows, self.items] = np.asarray(evidence.score_pairs(scorer, self.weak,
                                                           x_train.at[:, cols].set(x_eval[:, cols])))
      nll, hit = self.purchase_metrics(scores, k)
      out[name] = (float(nll.mean()), float(hit.mean()))
    return out


def _checkpoint_scorers(workdir: str, epochs):
  """(run, [(epoch, scorer)]) of a trained pair_ranker run: its recorded best and latest checkpoints, or
  the given epochs."""
  from hnt_jax.errors import ConfigError, WorkdirError
  from hnt_jax.recommend import load_run_config
  from hnt_jax.train.checkpoint import Checkpoints, abstract_of
  from hnt_jax.train.early_stopping import EarlyStopping
  from hnt_jax.train.loop import _payload
  from hnt_jax.train.setup import Run
  from hnt_jax.train.step import TrainState, make_optimizer

  config = load_run_config(workdir)
  if config.model.name != "pair_ranker":
    raise ConfigError(f"{workdir} holds a {config.model.name} run; the two views are scored for pair_ranker")
  run = Run(config)
  params, model_state = run.init_variables()
  state = TrainState.create(apply_fn=run.model.apply, params=params, tx=make_optimizer(config.train))
  abstract = abstract_of(_payload(state, model_state, EarlyStopping(0)))
  ckpt = Checkpoints(workdir)
  pc = config.model.pair_ranker
  try:
    found_latest = ckpt.restore_latest(abstract)
    if found_latest is None:
      raise WorkdirError(f"no checkpoint: train first with python -m hnt_jax.main --workdir {workdir}", workdir)
    latest_epoch, latest = found_latest
    best = int(np.asarray(latest["loop"]["best_epoch"]))
    wanted = epochs or sorted({e for e in (best, latest_epoch) if e >= 1})
    found = []
    for epoch in wanted:
      payload = latest if epoch == latest_epoch else ckpt.restore_recorded_best(abstract, epoch)[1]
      p = payload["params"]["scorer"]
      scorer = evidence.PairScorer(hidden=pc.hidden, layers=pc.layers, standardize=pc.standardize)
      found.append((epoch, lambda x, *moments, p=p, scorer=scorer: scorer.apply({"params": p}, x, *moments)))
  finally:
    ckpt.close()
  return run, found


def main(argv=None) -> int:
  import argparse
  parser = argparse.ArgumentParser(prog="python -m hnt_jax.experiments.views", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a trained pair_ranker run")
  parser.add_argument("--pairs", type=int, default=1000)
  parser.add_argument("--seed", type=int, default=1)
  parser.add_argument("--epochs", default="", help="checkpoints to score, e.g. 8,40 (default: best and latest)")
  args = parser.parse_args(argv)
  epochs = [int(e) for e in args.epochs.split(",") if e.strip()]
  run, scorers = _checkpoint_scorers(args.workdir, epochs)
  pc = run.config.model.pair_ranker
  views = Views.build(run.ds, run.graphs.weak, pc.max_candidates, pc.cf_candidates, args.pairs, args.seed)
  k = evidence.n_aux(views.weak)
  x_train, x_eval = feature_views(views.weak, views.weak_without, views.users, views.items)
  print(f"{len(views.users)} training purchases of {run.ds.name}, one per user (seed {args.seed})\n")
  print("| feature group | pairs whose views differ |\n|---|---|")
  for name, share in mismatch(x_train, x_eval, k).items():
    print(f"| {name} | {share:.3f} |")
  print("\n| epoch | NLL train view | NLL eval view | gap | HR@10 train view | HR@10 eval view |\n|---|---|---|---|---|---|")
  for epoch, scorer in scorers:
    g = views.gap(scorer)
    print(f"| {epoch} | {g['nll_train']:.4f} | {g['nll_eval']:.4f} | {g['gap']:.4f} ± {g['gap_se']:.4f} | "
          f"{g['hr_train']:.4f} | {g['hr_eval']:.4f} |")
  epoch, scorer = scorers[-1]
  print(f"\nepoch {epoch}, the purchase's features with one group swapped into its evaluation view:\n")
  print("| swapped | NLL train view | HR@10 train view |\n|---|---|---|")
  for name, (nll, hr) in views.swapped(scorer, x_train, x_eval).items():
    print(f"| {name} | {nll:.4f} | {hr:.4f} |")
  return 0


if __name__ == "__main__":
  import sys

  from hnt_jax.cli import main_with_clean_errors
  main_with_clean_errors(lambda: sys.exit(main()))
