"""Which auxiliary edges hurt the target loss? Edge influence against HNT's learned negative-transfer gates.

Trains HNT on synthetic data with planted noise edges, then ranks every view and cart edge two ways:
  * influence: ∂ L_BPR(training purchases) / ∂ w_e, the gradient with respect to the edge's weight in the
    adjacency and incidence (positive: the edge raises the target loss);
  * gates: 1 − g_uj, HNT's learned suppression.
and prints how well each ranks the planted noise edges first (AUC; 0.5 is chance).

  python examples/edge_influence_vs_gates.py --workdir /tmp/influence [--epochs 40]
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

from hnt_jax import Run, base_config, edge_influence, train_and_evaluate, load_trained_params


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
  """P(score of a positive > score of a negative), ties counting half."""
  scores = np.concatenate([positive, negative])
  order = scores.argsort(kind="stable")
  ranks = np.empty(scores.shape[0])
  ranks[order] = np.arange(1, scores.shape[0] + 1)
  for value in np.unique(scores):
    tie = scores == value
    ranks[tie] = ranks[tie].mean()
  n = positive.shape[0]
  return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * negative.shape[0]))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--epochs", type=int, default=40)
  parser.add_argument("--users", type=int, default=600)
  args = parser.parse_args()

  config = base_config()
  config.data.synthetic.update(n_users=args.users, n_items=args.users * 2 // 3)
  config.train.update(epochs=args.epochs, batch_size=512, learning_rate=5e-3, eval_every=5, patience=0,
                      progress=False)
  train_and_evaluate(config, args.workdir)
  run = Run(config)
  params, model_state, _ = load_trained_params(run, args.workdir)
  variables, model, ds = {"params": params, **model_state}, run.model, run.ds
  target = ds.train_target.tocoo()
  users, pos = jnp.asarray(target.row, jnp.int32), jnp.asarray(target.col, jnp.int32)
  neg = jnp.asarray(np.random.default_rng(0).integers(0, ds.n_items, users.shape[0]), jnp.int32)

  def target_bpr(graphs):
    emb = model.apply(variables, graphs, method=model.embed)
    return -jnp.mean(jax.nn.log_sigmoid(jnp.sum(emb.users[users] * (emb.items[pos] - emb.items[neg]), -1)))

  gates = run.embed(variables, run.graphs).gates
  for behavior, gate in zip(ds.auxiliary, gates):
    noise = ds.truth.noise[behavior]
    influence = np.asarray(edge_influence(target_bpr, run.graphs, behavior))
    suppression = 1.0 - np.asarray(gate)
    print(f"{behavior:5s} planted noise ranked first: influence AUC {auc(influence[noise], influence[~noise]):.3f}, "
          f"gate AUC {auc(suppression[noise], suppression[~noise]):.3f} ({noise.sum()} of {noise.size} edges noise)")


if __name__ == "__main__":
  main()
