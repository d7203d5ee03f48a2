"""Synthetic multi-behavior data with planted hesitations and noise edges, and the ground truth.

The generative story (all NumPy, deterministic given `seed`, vectorized over users in chunks):
* users and items have latent factors; item popularity skews the choice;
* each user has an *interest set*: a popularity-drawn consideration pool ranked by affinity / temperature
  plus Gumbel noise (a sample without replacement). It is split at random into training purchases, **hesitations** (genuinely interesting
  items the user touched through auxiliary behaviors but did not buy) and two untouched interesting items;
* the held-out purchases (validation, test) are a hesitation item with probability
  `heldout_hesitation_prob`, else an untouched interesting item — as in real logs, most next purchases were
  touched before;
* the first auxiliary behavior (e.g. view) holds every purchased and hesitation item; later auxiliary
  behaviors (e.g. cart) hold each purchase with probability `cart_purchase_rate` and each hesitation with
  `cart_hesitation_rate`;
* every auxiliary behavior also gets uniformly random **noise** edges (misoperations), `noise_rate` per
  genuine edge of that user, never on the user's interest set.

`generate` returns a `Dataset` whose `truth` holds the planted ground truth: per auxiliary behavior a noise
mask aligned with that behavior's CSR entries, the hesitation pairs, and which held-out items were
hesitations.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from hnt_jax.data.dataset import Dataset

_CHUNK_CELLS = 1 << 22  # user-item-dimension cells scored at once (bounds memory)

BUY, HESITATION, FRESH, UNUSED = 0, 1, 2, 3


@dataclasses.dataclass
class Truth:
  """What the generator planted."""
  user_factors: np.ndarray
  item_factors: np.ndarray
  noise: dict[str, np.ndarray]  # auxiliary behavior -> bool per CSR entry of train[b] (True: noise edge)
  hesitation: sp.csr_matrix  # genuine weak-signal pairs (touched, interesting, not bought in training)
  test_from_hesitation: np.ndarray  # bool per user: the test item is one of the user's hesitations
  valid_from_hesitation: np.ndarray


def generate(cfg, behaviors: tuple[str, ...] = ("view", "cart", "buy"), name: str = "synthetic"
             ) -> Dataset:
  """Builds the dataset described by `cfg` (the `data.synthetic` config block)."""
  rng = np.random.default_rng(int(cfg.seed))
  m, n, d = int(cfg.n_users), int(cfg.n_items), int(cfg.dim)
  if m < 1 or n < 8:
    raise ValueError(f"synthetic data needs at least 1 user and 8 items (got {m} users, {n} items)")
  users_f = rng.normal(size=(m, d)).astype(np.float32)
  items_f = rng.normal(size=(n, d)).astype(np.float32)
  pop = (cfg.popularity * rng.normal(size=n)).astype(np.float32)

  cap = max(2, n // 4)  # keep interest sets well inside the catalogue
  n_buy = np.clip(1 + rng.poisson(max(cfg.purchases_per_user - 1, 0), m), 1, cap)
  n_hes = np.clip(rng.poisson(cfg.hesitations_per_user, m), 0, cap)
  k = int((n_buy + n_hes).max()) + 2
  slots, distinct = _interest_sets(rng, users_f, items_f, pop, k, cfg.temperature, d)  # [m, k] items
  if (distinct < 3).any():
    raise ValueError("synthetic data: some users found fewer than 3 distinct items; use more items")
  n_buy = np.minimum(n_buy, distinct - 2)
  n_hes = np.minimum(n_hes, distinct - 2 - n_buy)

  # Assign roles to each user's slots: n_buy purchases, n_hes hesitations, 2 untouched, then unused.
  pos = np.arange(k)[None, :]
  roles = np.full((m, k), UNUSED, np.int8)
  roles[pos < (n_buy + n_hes + 2)[:, None]] = FRESH
  roles[pos < (n_buy + n_hes)[:, None]] = HESITATION
  roles[pos < n_buy[:, None]] = BUY
  used = roles != UNUSED
  order = np.argsort(np.where(used, rng.random((m, k)), 2.0), axis=1)  # shuffle roles within used slots
  roles = np.take_along_axis(roles, order, axis=1)

  valid_slot, valid_hes = _pick_heldout(rng, roles, cfg.heldout_hesitation_prob, exclude=None)
  test_slot, test_hes = _pick_heldout(rng, roles, cfg.heldout_hesitation_prob, exclude=valid_slot)
  rows = np.arange(m)
  valid = _csr(rows, slots[rows, valid_slot], m, n)
  test = _csr(rows, slots[rows, test_slot], m, n)

  is_buy, is_hes = roles == BUY, roles == HESITATION
  train: dict[str, sp.csr_matrix] = {}
  noise: dict[str, np.ndarray] = {}
  interest = _csr(np.repeat(rows, k)[used.ravel()], slots[used], m, n)
  aux = behaviors[:-1]
  for idx, b in enumerate(aux):
    if idx == 0:
      genuine = is_buy | is_hes
    else:
      genuine = (is_buy & (rng.random((m, k)) < cfg.cart_purchase_rate)) | (
          is_hes & (rng.random((m, k)) < cfg.cart_hesitation_rate))
    g_users = np.repeat(rows, k)[genuine.ravel()]
    g_items = slots[genuine]
    n_noise = rng.poisson(cfg.noise_rate * genuine.sum(1))
    z_users = np.repeat(rows, n_noise)
    z_items = rng.integers(0, n, z_users.shape[0])
    off_interest = np.asarray(interest[z_users, z_items]).ravel() == 0
    z_users, z_items = z_users[off_interest], z_items[off_interest]
    train[b], noise[b] = _labelled_csr(np.concatenate([g_users, z_users]),
                                       np.concatenate([g_items, z_items]),
                                       np.concatenate([np.zeros(g_users.shape[0], bool),
                                                       np.ones(z_users.shape[0], bool)]), m, n)
  train[behaviors[-1]] = _csr(np.repeat(rows, k)[is_buy.ravel()], slots[is_buy], m, n)
  hesitation = _csr(np.repeat(rows, k)[is_hes.ravel()], slots[is_hes], m, n)
  truth = Truth(user_factors=users_f, item_factors=items_f, noise=noise, hesitation=hesitation,
                test_from_hesitation=test_hes, valid_from_hesitation=valid_hes)
  info = dict(split="holdout_valid", duplicates={b: 0 for b in behaviors}, sources={"synthetic": "generator"},
              users_without_test=0)
  return Dataset(name=name, n_users=m, n_items=n, behaviors=tuple(behaviors), train=train, valid=valid,
                 test=test, id_base=0, info=info, truth=truth)


def _interest_sets(rng, users_f, items_f, pop, k, temperature, d) -> tuple[np.ndarray, np.ndarray]:
  """Per user, up to k distinct items ordered by affinity + Gumbel noise, and how many are distinct.

  Each user first draws a consideration pool of items by popularity (softmax(pop), with replacement), then
  ranks the pool by affinity / temperature plus Gumbel noise: a sample without replacement that costs
  O(users x pool), not O(users x catalogue), so millions of edges generate in seconds.
  """
  m, n = users_f.shape[0], items_f.shape[0]
  pool = min(4 * n, 4 * k + 32)
  prob = np.exp(pop - pop.max())
  prob /= prob.sum()
  out = np.zeros((m, k), np.int64)
  distinct = np.zeros(m, np.int64)
  chunk = max(1, _CHUNK_CELLS // (pool * d))
  scale = 1.0 / (np.sqrt(d) * temperature)
  for start in range(0, m, chunk):
    u = users_f[start:start + chunk]
    cand = np.sort(rng.choice(n, size=(u.shape[0], pool), p=prob), axis=1)
    score = np.einsum("cd,cpd->cp", u, items_f[cand]) * scale
    score -= np.log(-np.log(rng.random(score.shape, dtype=np.float32)))
    score[:, 1:][cand[:, 1:] == cand[:, :-1]] = -np.inf  # keep one copy of repeated draws
    top = np.argpartition(-score, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(score, top, axis=1)
    order = np.argsort(-vals, axis=1)
    out[start:start + chunk] = np.take_along_axis(np.take_along_axis(cand, top, axis=1), order, axis=1)
    distinct[start:start + chunk] = np.isfinite(vals).sum(axis=1)
  return out, distinct


def _pick_heldout(rng, roles, p_hesitation, exclude):
  """One slot per user: a random hesitation slot with probability p, else an untouched slot."""
  m, k = roles.shape
  rows = np.arange(m)
  hes_ok = roles == HESITATION
  if exclude is not None:
    hes_ok[rows, exclude] = False
  keys = np.where(hes_ok, rng.random((m, k)), 2.0)
  hes_slot = np.argmin(keys, axis=1)
  has_hes = hes_ok.any(axis=1)
  fresh_ok = roles == FRESH
  if exclude is not None:
    fresh_ok[rows, exclude] = False
  fresh_slot = np.argmax(fresh_ok, axis=1)  # first untouched slot still free
  use_hes = has_hes & (rng.random(m) < p_hesitation)
  return np.where(use_hes, hes_slot, fresh_slot), use_hes


def _csr(users, items, m, n) -> sp.csr_matrix:
  mat = sp.csr_matrix((np.ones(users.shape[0], np.float32), (users, items)), shape=(m, n))
  mat.sum_duplicates()
  mat.data[:] = 1.0
  mat.sort_indices()
  return mat


def _labelled_csr(users, items, labels, m, n):
  """Binary CSR plus a per-entry label (True only if every copy of the pair is labelled True)."""
  keys = users * n + items
  unique, inverse = np.unique(keys, return_inverse=True)
  genuine_copies = np.bincount(inverse, weights=~labels, minlength=unique.shape[0])
  rows, cols = np.divmod(unique, n)
  mat = sp.csr_matrix((np.ones(unique.shape[0], np.float32), (rows, cols)), shape=(m, n))
  mat.sort_indices()  # entries are already in (row, col) order, matching `unique`
  return mat, genuine_copies == 0
