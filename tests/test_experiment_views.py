"""The two views of a training purchase (hnt_jax.experiments.views): leave-one-out in the loss rows is exact
where it is meant to be, the gap measures what a scorer reads differently, and the command runs on a
trained pair_ranker."""
import numpy as np
import pytest

from hnt_jax.experiments import views
from hnt_jax.models import evidence
from tests.models.test_evidence import CF, tiny  # noqa: F401  (the module's tiny dataset fixture)

SHARES = ["item conversion shares", "user conversion share"]
INEXACT = ["rank by cross counts"]  # the others' co-buy counts keep their paths through the purchase


def converting_purchases(ds, n):
  conv = ds.converting_pairs().tocoo()
  picks = np.linspace(0, conv.nnz - 1, n).astype(int)
  return conv.row[picks], conv.col[picks]


def test_training_view_equals_evaluation_view_on_the_data_without_the_purchase(tiny):  # noqa: F811
  """One purchase at a time (so that no other removal moves the row): every feature of its training view
  equals its evaluation view, except the conversion shares, which move only by the shift of the global
  prior (one pair fewer in the data), and the documented rank by cross counts."""
  _, ds, graphs = tiny
  groups = views.feature_groups(2)
  for u, j in zip(*converting_purchases(ds, 4)):
    v = views.Views.of(ds, graphs.weak, 64, CF, [u], [j])
    x_train, x_eval = (np.asarray(x)[0] for x in views.feature_views(v.weak, v.weak_without, v.users, v.items))
    prior_shift = float(np.abs(np.asarray(v.weak.conv_prior) - np.asarray(v.weak_without.conv_prior)).max())
    assert 0 < prior_shift < 0.01
    for name, cols in groups.items():
      diff = np.abs(x_train[cols] - x_eval[cols]).max()
      if name in SHARES:
        assert diff <= prior_shift + 1e-6, (u, j, name, diff)
      elif name not in INEXACT:
        assert diff <= 1e-5, (u, j, name, diff)
    share = views.mismatch(x_train[None], x_eval[None], 2, atol=prior_shift + 1e-6)
    assert share["user conversion share"] == 0.0


def test_loss_row_sees_the_users_items_as_evaluation_would(tiny):  # noqa: F811
  """The other A_u items of a purchase's loss row: their features equal the evaluation view on the data
  without the purchase (the ranks compare them with the purchase left out, not with its whole counts),
  except the conversion shares (prior shift) and the co-buy count, which keeps the paths through the
  purchase: by exactly co-buy(j, i), the users who bought both j and i."""
  import jax.numpy as jnp
  _, ds, graphs = tiny
  buy = (ds.train_target.toarray() > 0).astype(float)
  n_rank_cross = views.feature_groups(2)["rank by cross counts"]
  cobuy_col, cobuy_rank = views.feature_groups(2)["cross counts"][-1], n_rank_cross[-1]
  exact = [c for c in range(evidence.n_features(2)) if c not in (1, 2, 11, cobuy_col, cobuy_rank)]
  moved = 0
  for u, j in zip(*converting_purchases(ds, 4)):
    v = views.Views.of(ds, graphs.weak, 64, CF, [u], [j])
    users = jnp.asarray([u])
    items, mask, known, values = evidence.candidates(v.weak, users)
    row = np.asarray(evidence.features(v.weak, users, items, known, values, jnp.zeros(items.shape),
                                       jnp.asarray([j])))[0]
    known_e, values_e = evidence.lookup(v.weak_without, users, items)
    held = np.asarray(evidence.features(v.weak_without, users, items, known_e, values_e,
                                        jnp.zeros(items.shape)))[0]
    in_a = np.asarray(known[0] & mask[0])
    assert in_a.sum() > 3 and (np.asarray(known_e[0])[in_a]).all()
    np.testing.assert_allclose(row[in_a][:, exact], held[in_a][:, exact], atol=1e-5, err_msg=f"{u} {j}")
    prior_shift = float(np.abs(np.asarray(v.weak.conv_prior) - np.asarray(v.weak_without.conv_prior)).max())
    assert np.abs(row[in_a][:, [1, 2, 11]] - held[in_a][:, [1, 2, 11]]).max() <= prior_shift + 1e-6
    through_j = buy[:, j] @ buy[:, np.asarray(items[0])[in_a]]
    np.testing.assert_allclose(np.expm1(row[in_a][:, cobuy_col]) - np.expm1(held[in_a][:, cobuy_col]), through_j,
                               atol=1e-3)
    moved += int((through_j > 0).sum())
  assert moved > 0  # the co-buy difference is exercised, not only zero


def test_gap_is_zero_for_exact_features_and_not_for_the_inexact_rank(tiny):  # noqa: F811
  _, ds, graphs = tiny
  u, j = converting_purchases(ds, 4)
  exact, inexact = [], []
  for uu, jj in zip(u, j):
    v = views.Views.of(ds, graphs.weak, 64, CF, [uu], [jj])
    # log purchases of the item and the user's flags on it: both exact under leave-one-out
    exact.append(v.gap(lambda x, *_: x[..., 0] + x[..., 6] + x[..., 7])["gap"])
    cross_rank = views.feature_groups(2)["rank by cross counts"][-1]
    inexact.append(v.gap(lambda x, *_: 3.0 * x[..., cross_rank])["gap"])
  np.testing.assert_allclose(exact, 0.0, atol=1e-5)
  assert max(abs(g) for g in inexact) > 0.01


def test_sample_purchases_one_per_user_distinct_items(tiny):  # noqa: F811
  _, ds, _ = tiny
  users, items = views.sample_purchases(ds, 1000, seed=0)
  assert len(set(users.tolist())) == len(users) and len(set(items.tolist())) == len(items)
  target = ds.train_target.toarray() > 0
  assert target[users, items].all() and (target[users].sum(axis=1) > 1).all()
  again = views.sample_purchases(ds, 1000, seed=0)
  assert (again[0] == users).all() and (again[1] == items).all()
  assert evidence.n_features(2) == sum(len(c) for c in views.feature_groups(2).values())


@pytest.mark.slow
def test_command_on_a_trained_pair_ranker(tmp_path, capsys):
  from hnt_jax.config import base_config
  from hnt_jax.errors import ConfigError
  from hnt_jax.train.loop import train_and_evaluate
  config = base_config()
  config.data.synthetic.update(n_users=60, n_items=40)
  config.model.name = "pair_ranker"
  config.model.pair_ranker.update(max_candidates=32, cf_candidates=4)
  config.train.update(epochs=2, eval_every=1, patience=0, batch_size=128, progress=False)
  result = train_and_evaluate(config, str(tmp_path / "run"))
  assert views.main(["--workdir", str(tmp_path / "run"), "--pairs", "8"]) == 0
  out = capsys.readouterr().out
  assert "| user conversion share |" in out and "| epoch | NLL train view" in out
  table = out[out.index("| epoch |"):out.index("the purchase's features")]
  epochs = [int(line.split("|")[1]) for line in table.splitlines()[2:] if line.startswith("|")]
  assert epochs == sorted({result["best_epoch"], 2})  # the recorded best and the latest checkpoint
  for line in table.splitlines()[2:]:
    if line.startswith("|"):
      assert all(np.isfinite(float(cell.split("±")[0])) for cell in line.strip("|").split("|")[1:])
  from hnt_jax.train import records
  config.model.name = "mf"
  (tmp_path / "mf").mkdir()
  records.write_config(config, str(tmp_path / "mf"))
  with pytest.raises(ConfigError, match="holds a mf run"):
    views.main(["--workdir", str(tmp_path / "mf")])
