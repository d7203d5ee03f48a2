"""Load a trained HNT checkpoint, score users, and show a user's hesitation set with its auxiliary history.

  python -m hnt_jax.main --config configs/synthetic.py --workdir /tmp/hnt_synth      # train first
  python examples/inspect_hesitation.py --workdir /tmp/hnt_synth --user 7 [--k 10]

Prints a Markdown table: the user's hesitation items (the weak signals HNT's conversion model rates most
like purchases), their confidence, which auxiliary behaviors the user did on them, the item's purchase count,
whether the item is the user's held-out test purchase, and the user's top-k recommendations.
"""
import argparse
import json
import os

import jax.numpy as jnp
import numpy as np

from hnt_jax import Run, load_trained_params


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--user", type=int, default=0, help="user index (0-based, as in the model)")
  parser.add_argument("--k", type=int, default=10)
  args = parser.parse_args()

  import ml_collections
  with open(os.path.join(args.workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  run = Run(config)
  params, model_state, epoch = load_trained_params(run, args.workdir)
  if "hesitation" not in model_state:
    raise SystemExit(f"{args.workdir} holds a {config.model.name} model without hesitation sets")
  ds, u = run.ds, args.user
  sets = {k: np.asarray(v[u]) for k, v in model_state["hesitation"].items()}
  test = set(ds.test[u].indices.tolist()) if ds.test is not None else set()
  purchases = np.asarray(ds.train_target.sum(axis=0)).ravel()

  print(f"user {u}, checkpoint of epoch {epoch}: hesitation set ({int(sets['mask'].sum())} items)\n")
  print("| item | confidence | " + " | ".join(ds.auxiliary) + " | purchases (all users) | test purchase |")
  print("|---:|---:|" + "---|" * len(ds.auxiliary) + "---:|---|")
  for item, conf, keep in zip(sets["items"], sets["conf"], sets["mask"]):
    if keep:
      did = ["yes" if ds.train[b][u, item] else "" for b in ds.auxiliary]
      print(f"| {item} | {conf:.3f} | " + " | ".join(did) + f" | {int(purchases[item])} | "
            f"{'yes' if item in test else ''} |")

  variables = {"params": params, **model_state}
  emb = run.embed(variables, run.graphs)
  scores = np.array(run.model.apply(variables, run.graphs, emb, jnp.asarray([u]), method=run.model.score)[0])
  scores[ds.train_target[u].indices] = -np.inf  # already bought
  top = np.argsort(-scores)[:args.k]
  print(f"\ntop-{args.k} recommendations: " + ", ".join(
      f"{i}{'*' if i in test else ''}" for i in top) + "   (* = the held-out test purchase)")


if __name__ == "__main__":
  main()
