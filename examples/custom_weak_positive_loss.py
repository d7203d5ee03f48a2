"""Swap in a custom weak-positive loss and train it with the standard loop.

The term below asks every batch user's *weak-signal* items (touched through view or cart, never bought) to
rank above a random item, weighted by `--weight`: a simpler cousin of HNT's hesitation loss, added to
LightGCN-G's BPR loss through `train_and_evaluate(..., extra_loss=...)`.

  python examples/custom_weak_positive_loss.py --workdir /tmp/weak_pos [--epochs 20] [--weight 0.3]
"""
import argparse

import jax
import jax.numpy as jnp

from hnt_jax import Run, base_config, train_and_evaluate


def weak_positive_loss(weight: float):
  def extra_loss(model, variables, graphs, batch, key):
    """−w · mean log σ(ŷ_u,weak − ŷ_u,random) over the batch users that have weak signals."""
    emb = model.apply(variables, graphs, method=model.embed)
    weak = graphs.weak
    users = batch["users"]
    k_pick, k_neg = jax.random.split(key)
    mask = weak.cand_mask[users]  # [B, C] padded weak-signal candidates of each user
    pick = jnp.argmax(jnp.where(mask, jax.random.uniform(k_pick, mask.shape), -1.0), axis=1)
    items = jnp.take_along_axis(weak.cand_items[users], pick[:, None], axis=1)[:, 0]
    negatives = jax.random.randint(k_neg, users.shape, 0, emb.items.shape[0])
    diff = jnp.sum(emb.users[users] * (emb.items[items] - emb.items[negatives]), axis=-1)
    valid = jnp.any(mask, axis=1)
    loss = -jnp.sum(jnp.where(valid, jax.nn.log_sigmoid(diff), 0.0)) / jnp.maximum(valid.sum(), 1)
    return weight * loss
  return extra_loss


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--epochs", type=int, default=20)
  parser.add_argument("--weight", type=float, default=0.3)
  parser.add_argument("--users", type=int, default=600, help="synthetic users")
  args = parser.parse_args()

  config = base_config()  # built-in synthetic data with planted hesitations
  config.data.synthetic.update(n_users=args.users, n_items=args.users * 2 // 3)
  config.model.name = "lightgcn_g"
  config.train.update(epochs=args.epochs, batch_size=512, learning_rate=5e-3, eval_every=5, progress=False)
  run = Run(config, weak_signals=True)  # LightGCN-G itself does not read graphs.weak: ask for it
  plain = train_and_evaluate(config, f"{args.workdir}/plain", run=run)
  custom = train_and_evaluate(config, f"{args.workdir}/weak_positive", run=run,
                              extra_loss=weak_positive_loss(args.weight))
  for name, r in (("LightGCN-G", plain), ("LightGCN-G + weak-positive term", custom)):
    print(f"{name:32s} test HR@10 {r['test']['hr@10']:.4f}  NDCG@10 {r['test']['ndcg@10']:.4f}")


if __name__ == "__main__":
  main()
