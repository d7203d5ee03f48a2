"""Top-K recommendations from a trained run, in the dataset's original ids.

  python -m hnt_jax.recommend --workdir DIR --users 1,2,3 --k 10

Training target items (purchases) are excluded; each row also says which auxiliary behaviors the user
already had with the item.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hnt_jax.errors import ConfigError, DataError, WorkdirError


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  from hnt_jax.train.records import read_json
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise WorkdirError(f"no config.json: is {workdir} a training workdir?", workdir)
  return ml_collections.ConfigDict(read_json(path))


def recommend(workdir: str, users: Sequence[int], k: int = 10) -> list[dict]:
  """Rows (user, rank, item, score, auxiliary behaviors) for each user (original ids): the user's top `k`
  items among those they have not bought in training (fewer when fewer are left)."""
  from hnt_jax.train.loop import load_trained_params
  from hnt_jax.train.setup import Run

  if k < 1:
    raise ConfigError(f"--k {k}: must be at least 1")
  run = Run(load_run_config(workdir))
  ds = run.ds
  if k > ds.n_items:
    raise ConfigError(f"--k {k}: {ds.name} has only {ds.n_items} items")
  internal = np.asarray(users, np.int64) - ds.id_base
  bad = (internal < 0) | (internal >= ds.n_users)
  if bad.any():
    raise DataError(f"user id {users[int(np.argmax(bad))]} is not in {ds.name} "
                    f"(ids {ds.id_base}..{ds.n_users - 1 + ds.id_base})")
  params, model_state, epoch = load_trained_params(run, workdir)
  variables = {"params": params, **model_state}
  emb = run.embed(variables, run.graphs)
  u = jnp.asarray(internal, jnp.int32)
  scores = run.score_fn({"variables": variables, "graphs": run.graphs, "emb": emb}, u)
  scores = jnp.where(run.graphs.target.rows.dense(u) > 0, -jnp.inf, scores)
  top_scores, top_items = jax.device_get(jax.lax.top_k(scores, k))
  rows = []
  for r, user in enumerate(internal):
    for rank, (item, score) in enumerate(zip(top_items[r], top_scores[r]), 1):
      if not np.isfinite(score):  # a purchased item: the user has fewer than k candidates
        break
      aux = [b for b in ds.auxiliary if ds.train[b][user, item]]
      rows.append({"user": int(user) + ds.id_base, "rank": rank, "item": int(item) + ds.id_base,
                   "score": float(score), "auxiliary": aux, "checkpoint_epoch": epoch})
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m hnt_jax.recommend", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--users", required=True, help="comma-separated user ids (original ids)")
  parser.add_argument("--k", type=int, default=10, help="items per user (at least 1)")
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  args = parser.parse_args(argv)
  try:
    users = [int(x) for x in args.users.split(",") if x.strip()]
  except ValueError:
    parser.error(f"--users {args.users!r}: expected comma-separated integers")
  if not users:
    parser.error("--users: give at least one user id")
  if args.k < 1:
    parser.error(f"--k {args.k}: must be at least 1")
  rows = recommend(args.workdir, users, args.k)
  if args.json:
    print(json.dumps(rows, indent=2))
    return 0
  print("| user | rank | item | score | already did |")
  print("|---:|---:|---:|---:|---|")
  for row in rows:
    print(f"| {row['user']} | {row['rank']} | {row['item']} | {row['score']:.4f} | "
          f"{', '.join(row['auxiliary']) or '-'} |")
  return 0


if __name__ == "__main__":
  from hnt_jax.cli import main_with_clean_errors
  main_with_clean_errors(lambda: sys.exit(main()))
