"""The in-memory dataset every model trains on, and its statistics table."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
import scipy.sparse as sp


@dataclasses.dataclass
class Dataset:
  """Per-behavior binary user x item CSR matrices (0-based ids) and held-out ground truth.

  `train[b]` holds the training pairs of behavior b; behaviors are in cascade order with the target last.
  `valid` / `test` hold ground-truth pairs (several items per user allowed); users without any are not
  evaluated. `info` records how the files were read (duplicates removed, held-out pairs, source hashes).
  """
  name: str
  n_users: int
  n_items: int
  behaviors: tuple[str, ...]
  train: dict[str, sp.csr_matrix]
  valid: Optional[sp.csr_matrix]
  test: sp.csr_matrix
  id_base: int = 0
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  truth: Any = None  # synthetic data only: the planted ground truth (hnt_jax.data.synthetic.Truth)

  @property
  def target(self) -> str:
    return self.behaviors[-1]

  @property
  def auxiliary(self) -> tuple[str, ...]:
    return self.behaviors[:-1]

  @property
  def train_target(self) -> sp.csr_matrix:
    return self.train[self.target]

  def auxiliary_union(self) -> sp.csr_matrix:
    """Binary matrix of pairs with at least one auxiliary behavior."""
    union = sp.csr_matrix((self.n_users, self.n_items), dtype=np.float32)
    for b in self.auxiliary:
      union = union + self.train[b]
    union.data[:] = 1.0
    union.eliminate_zeros()
    return union

  def converting_pairs(self) -> sp.csr_matrix:
    """C: auxiliary pairs that also have the target behavior in training."""
    return binary_csr(self.auxiliary_union().multiply(self.train_target))

  def weak_signal_pairs(self) -> sp.csr_matrix:
    """W: auxiliary pairs that never produced the target behavior in training."""
    aux = self.auxiliary_union()
    return binary_csr(aux - aux.multiply(self.train_target))

  def evaluated_users(self, split: str = "test") -> np.ndarray:
    """Users with at least one ground-truth item in `split`."""
    mat = self.test if split == "test" else self.valid
    if mat is None:
      return np.zeros(0, np.int64)
    return np.flatnonzero(np.diff(mat.indptr) > 0)


def binary_csr(mat: sp.spmatrix) -> sp.csr_matrix:
  """`mat` with every stored non-zero set to 1, zeros dropped, indices sorted."""
  mat = sp.csr_matrix(mat)
  mat.eliminate_zeros()
  mat.data[:] = 1.0
  mat.sort_indices()
  return mat


def _observed_share(heldout: sp.csr_matrix, behavior: sp.csr_matrix) -> float:
  if heldout.nnz == 0:
    return float("nan")
  return float(heldout.multiply(behavior).nnz / heldout.nnz)


def statistics(ds: Dataset) -> dict[str, Any]:
  """Counts that describe the dataset (all from the loaded matrices)."""
  cells = ds.n_users * ds.n_items
  behaviors = {}
  for b in ds.behaviors:
    mat = ds.train[b]
    behaviors[b] = dict(
        pairs=int(mat.nnz),
        users=int(np.count_nonzero(np.diff(mat.indptr))),
        items=int(np.count_nonzero(np.bincount(mat.indices, minlength=ds.n_items))),
        density=float(mat.nnz / cells),
        duplicates=int(ds.info.get("duplicates", {}).get(b, 0)),
    )
  stats: dict[str, Any] = dict(name=ds.name, users=ds.n_users, items=ds.n_items, behaviors=behaviors)
  if ds.auxiliary:
    stats["converting_pairs"] = int(ds.converting_pairs().nnz)
    stats["weak_signal_pairs"] = int(ds.weak_signal_pairs().nnz)
    # the training purchases their user also had an auxiliary behavior on (HNT's `unseen_purchases`)
    stats["train_target_observed"] = float(stats["converting_pairs"] / max(ds.train_target.nnz, 1))
  aux = ds.auxiliary_union() if ds.auxiliary else None
  for split, mat in (("valid", ds.valid), ("test", ds.test)):
    if mat is None:
      continue
    entry = dict(pairs=int(mat.nnz), users=int(len(ds.evaluated_users(split))),
                 users_without_items=int(ds.n_users - len(ds.evaluated_users(split))))
    observed = {b: _observed_share(mat, ds.train[b]) for b in ds.auxiliary}
    if aux is not None:
      observed["any"] = _observed_share(mat, aux)
    entry["observed_in"] = observed
    if split == "valid" and aux is not None and stats["train_target_observed"] > 0:
      # the share of training purchases to score as never touched for the loss to see the validation's mix
      entry["unseen_purchases"] = float(np.clip(1.0 - observed["any"] / stats["train_target_observed"], 0, 1))
    stats[split] = entry
  for key in ("heldout_from_train", "heldout_from_auxiliary", "split", "users_without_test"):
    if key in ds.info:
      stats[key] = ds.info[key]
  return stats


def format_statistics(stats: dict[str, Any]) -> str:
  """A Markdown table of `statistics(ds)`."""
  lines = [f"## {stats['name']}: {stats['users']:,} users, {stats['items']:,} items", "",
           "| behavior | pairs | users | items | density | duplicates removed |",
           "|---|---:|---:|---:|---:|---:|"]
  for b, s in stats["behaviors"].items():
    lines.append(f"| {b} | {s['pairs']:,} | {s['users']:,} | {s['items']:,} | {s['density']:.3e} | "
                 f"{s['duplicates']:,} |")
  lines.append("")
  if "converting_pairs" in stats:
    conv, weak = stats["converting_pairs"], stats["weak_signal_pairs"]
    total = max(conv + weak, 1)
    lines.append(f"- auxiliary pairs: {conv + weak:,} = converting {conv:,} ({conv / total:.1%}) + "
                 f"weak-signal {weak:,} ({weak / total:.1%})")
    lines.append(f"- training purchases observed in an auxiliary behavior: {stats['train_target_observed']:.1%}")
  if "split" in stats:
    lines.append(f"- split: {stats['split']}")
  if stats.get("heldout_from_train"):
    lines.append(f"- validation pairs held out of the training target: {stats['heldout_from_train']:,}")
  if stats.get("heldout_from_auxiliary"):
    held = ", ".join(f"{b} {n:,}" for b, n in stats["heldout_from_auxiliary"].items())
    lines.append(f"- the same pairs held out of the auxiliary behaviors (data.holdout_behaviors=all): {held}")
  for split in ("valid", "test"):
    if split not in stats:
      continue
    s = stats[split]
    obs = ", ".join(f"{b} {v:.1%}" for b, v in s["observed_in"].items())
    lines.append(f"- {split}: {s['pairs']:,} pairs for {s['users']:,} users "
                 f"({s['users_without_items']:,} users without {split} items are not evaluated)"
                 + (f"; held-out items observed in: {obs}" if obs else "")
                 + (f"; unseen_purchases for this mix: {s['unseen_purchases']:.2f}" if "unseen_purchases" in s
                    else ""))
  return "\n".join(lines)
