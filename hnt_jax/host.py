"""Sparse products on the host (SciPy / NumPy) for the CPU backend, called from jitted code.

On the CPU backend XLA's gathers and scatters are several times slower than SciPy's CSR products and than a
cache-sized, chunked NumPy row gather; `train.propagation=auto` (CPU) or `host` routes the graph work here:

* `symmetric_matmul(matrix, x)`: Â · x for a symmetric adjacency (`HostMatrix`; LightGCN propagation); its
  gradient is Â · g.
* `edge_matmul(edges, x, mean)`: R · x (or D⁻¹ R · x, the mean over each user's items) for a user-item edge
  set R (`HostEdges`); the gradient is Rᵀ · g.
* `gated_mean(edges, phi, protos, emb, delta, temperature, active)`: negative transfer's gated view for every
  user, h_u = Σ_j g_uj e_j / Σ_j g_uj with g_uj = σ((⟨φ_j, π_u⟩ − δ) / τ), and the gates; the gradient
  reaches φ, π, e and δ (two sampled dense-dense products and four sparse products). With `active` (bool
  [n_users]) only those users' edges are gated and multiplied: other rows of h, and their gates, are 0.

* `row_dots(x, y, cols)`: ⟨x_b, y_j⟩ for the columns j = cols[b, c] of each row b (a batch of users' scores
  on their own candidate items); the gradients are the products of the [B, N] matrix holding the cotangent
  at (b, cols[b, c]) with y and with x.

Every product splits its rows into blocks of about equal entries that run on `host_threads()` threads
(SciPy's product and NumPy's gathers release the GIL). A graph's `HostOps` (`hnt_jax.sparse_ops`) holds its
`HostMatrix` and `HostEdges` as static fields, so jitted functions see only arrays and those objects, which
live as long as the graph does.
"""
from __future__ import annotations

import concurrent.futures
import functools
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

_MIN_SPLIT_ENTRIES = 1 << 18  # smaller matrices are multiplied in one piece (threads cost more than they save)
_CHUNK = 8192  # edges per gathered chunk: two [chunk, 64] float32 blocks stay in the L2 cache


def host_threads() -> int:
  """Threads for host products: the CPUs this process may use."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # not on Linux
    return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=None)
def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="hnt_jax-host")


def _row_blocks(indptr: np.ndarray, blocks: int) -> list[tuple[int, int]]:
  """Row ranges [lo, hi) with about equal numbers of entries."""
  n_rows, nnz = indptr.shape[0] - 1, int(indptr[-1])
  if nnz < _MIN_SPLIT_ENTRIES:
    blocks = 1
  cuts = np.searchsorted(indptr, np.linspace(0, nnz, blocks + 1)[1:-1])
  bounds = np.unique(np.concatenate([[0], cuts, [n_rows]]))
  return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def parallel(fn, n: int) -> list:
  """[fn(0), ..., fn(n - 1)], run on the host threads (fn should spend its time in code that releases the
  GIL: SciPy's sparse routines, NumPy's gathers)."""
  if n == 1:
    return [fn(0)]
  return list(_pool(n).map(fn, range(n)))


def parallel_chunks(fn, n: int, size: int, threads: Optional[int] = None) -> None:
  """fn(start, stop) for the chunks [start, stop) of `size` rows of range(n), dealt in turn to `threads` host
  threads (default: all); each call should write its own rows only."""
  threads = host_threads() if threads is None else threads
  starts = range(0, n, size)

  def work(t):
    for start in starts[t::threads]:
      fn(start, min(start + size, n))

  parallel(work, threads)


class HostMatrix:
  """A CSR matrix multiplied by row blocks in parallel."""

  def __init__(self, csr: sp.csr_matrix):
    self.shape = csr.shape
    self.rows = _row_blocks(csr.indptr, host_threads())
    self.blocks = [csr[lo:hi] for lo, hi in self.rows]

  def __matmul__(self, x: np.ndarray) -> np.ndarray:
    if len(self.blocks) == 1:
      return self.blocks[0] @ x
    out = np.empty((self.shape[0],) + x.shape[1:], x.dtype)

    def multiply(k):
      lo, hi = self.rows[k]
      out[lo:hi] = self.blocks[k] @ x

    parallel(multiply, len(self.blocks))
    return out


def host_matrix(data: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape) -> HostMatrix:
  """A sparse matrix given as COO entries, ready for threaded products."""
  return HostMatrix(sp.csr_matrix((data, (rows, cols)), shape=shape))


class HostEdges:
  """A user-item edge set in CSR order (users sorted), for products with per-edge values."""

  def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int):
    self.shape = (n_users, n_items)
    self.users = users.astype(np.int64)
    self.items = items.astype(np.int64)
    self.indices = items.astype(np.int32)
    self.indptr = np.concatenate([[0], np.cumsum(np.bincount(self.users, minlength=n_users))]).astype(np.int64)
    self.rows = _row_blocks(self.indptr, host_threads())
    self.spans = [(int(self.indptr[lo]), int(self.indptr[hi])) for lo, hi in self.rows]
    degree = np.diff(self.indptr).astype(np.float32)
    self.inv_degree = np.repeat(1.0 / np.maximum(degree, 1.0), np.diff(self.indptr)).astype(np.float32)

  def subset(self, active: np.ndarray) -> tuple["HostEdges", np.ndarray]:
    """The edges of the users with `active[u]` (same shape, rows and order), and which edges they are."""
    keep = active[self.users]
    return HostEdges(self.users[keep], self.items[keep], *self.shape), keep

  def _block(self, k: int, data: np.ndarray) -> sp.csr_matrix:
    (lo, hi), (elo, ehi) = self.rows[k], self.spans[k]
    return sp.csr_matrix((data[elo:ehi], self.indices[elo:ehi], self.indptr[lo:hi + 1] - elo),
                         shape=(hi - lo, self.shape[1]))

  def matmul(self, data: np.ndarray, x: np.ndarray) -> np.ndarray:
    """R · x with R's entries `data` (per edge): [n_users, d]."""
    if len(self.rows) == 1:
      return np.asarray(self._block(0, data) @ x, np.float32)
    out = np.empty((self.shape[0], x.shape[1]), np.float32)

    def multiply(k):
      lo, hi = self.rows[k]
      out[lo:hi] = self._block(k, data) @ x

    parallel(multiply, len(self.rows))
    return out

  def rmatmul(self, data: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rᵀ · y with R's entries `data`: [n_items, d] (each block's share, summed)."""
    def multiply(k):
      lo, hi = self.rows[k]
      return self._block(k, data).T @ y[lo:hi]

    parts = parallel(multiply, len(self.rows))
    return np.asarray(functools.reduce(np.add, parts), np.float32)

  def sddmm(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """⟨a[user], b[item]⟩ for every edge: [E] (rows gathered in cache-sized chunks)."""
    out = np.empty(self.users.shape[0], np.float32)

    def dots(k):
      elo, ehi = self.spans[k]
      for s in range(elo, ehi, _CHUNK):
        e = min(s + _CHUNK, ehi)
        out[s:e] = np.einsum("ij,ij->i", a.take(self.users[s:e], axis=0), b.take(self.items[s:e], axis=0))

    parallel(dots, len(self.rows))
    return out

  def row_sums(self, data: np.ndarray) -> np.ndarray:
    return np.add.reduceat(np.concatenate([data, [0.0]]), self.indptr[:-1])[:self.shape[0]] * (
        np.diff(self.indptr) > 0)


def _callback(fn, shapes, *args):
  return jax.pure_callback(fn, shapes, *args, vmap_method="sequential")


def _f32(x) -> np.ndarray:
  return np.asarray(x, np.float32)


# --- Â · x, Â symmetric -----------------------------------------------------------------------------------

def _matrix_product(matrix: HostMatrix, x: jax.Array) -> jax.Array:
  return _callback(lambda x: (matrix @ _f32(x)).astype(x.dtype, copy=False),
                   jax.ShapeDtypeStruct(x.shape, x.dtype),
                   x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def symmetric_matmul(matrix: HostMatrix, x: jax.Array) -> jax.Array:
  """Â · x for a symmetric Â; the gradient is Âᵀ · g = Â · g, also on the host."""
  return _matrix_product(matrix, x)


symmetric_matmul.defvjp(lambda matrix, x: (_matrix_product(matrix, x), None),
                        lambda matrix, _, g: (_matrix_product(matrix, g),))


# --- R · x and D⁻¹ R · x ------------------------------------------------------------------------------

def _edge_data(edges: HostEdges, mean: bool) -> np.ndarray:
  return edges.inv_degree if mean else np.ones_like(edges.inv_degree)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 2))
def edge_matmul(edges: HostEdges, x: jax.Array, mean: bool = False) -> jax.Array:
  """R · x ([n_users, d]) for an edge set; with `mean`, each row divided by its degree."""
  return _edge_matmul_fwd(edges, x, mean)[0]


def _edge_matmul_fwd(edges, x, mean):
  shape = jax.ShapeDtypeStruct((edges.shape[0], x.shape[1]), jnp.float32)
  return _callback(lambda x: edges.matmul(_edge_data(edges, mean), _f32(x)), shape, x), None


def _edge_matmul_bwd(edges, mean, _, g):
  shape = jax.ShapeDtypeStruct((edges.shape[1], g.shape[1]), jnp.float32)
  return (_callback(lambda g: edges.rmatmul(_edge_data(edges, mean), _f32(g)), shape, g),)


edge_matmul.defvjp(_edge_matmul_fwd, _edge_matmul_bwd)


# --- negative transfer's gated view ---------------------------------------------------------------------

_EPS = 1e-8  # the same floor as the XLA formulation's Σ_j g_uj


def _gated_forward(edges: HostEdges, phi, protos, emb, delta, temperature):
  s = edges.sddmm(protos, phi)
  gates = (1.0 / (1.0 + np.exp(-(s - delta) / temperature))).astype(np.float32)
  total = edges.matmul(gates, emb)
  norm = edges.row_sums(gates).astype(np.float32)
  h = total / np.maximum(norm, _EPS)[:, None]
  return h.astype(np.float32), gates, norm


def gated_mean(edges: HostEdges, phi: jax.Array, protos: jax.Array, emb: jax.Array, delta: jax.Array,
               temperature: float, active: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
  """(h [n_users, d], gates [E]) of an edge set; see the module docstring. With `active`, the rows of other
  users and their edges' gates are 0 (their gradients do not flow)."""
  subset = active is not None
  if not subset:
    active = jnp.ones((edges.shape[0],), bool)
  return _gated(edges, temperature, subset, phi, protos, emb, delta, active)


def _active_edges(edges: HostEdges, subset: bool, active) -> tuple[HostEdges, Optional[np.ndarray]]:
  return edges.subset(np.asarray(active, bool)) if subset else (edges, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _gated(edges, temperature, subset, phi, protos, emb, delta, active):
  return _gated_fwd(edges, temperature, subset, phi, protos, emb, delta, active)[0]


def _gated_fwd(edges, temperature, subset, phi, protos, emb, delta, active):
  m, e = edges.shape[0], edges.users.shape[0]
  shapes = (jax.ShapeDtypeStruct((m, emb.shape[1]), jnp.float32), jax.ShapeDtypeStruct((e,), jnp.float32),
            jax.ShapeDtypeStruct((m,), jnp.float32))

  def forward(phi, protos, emb, delta, active):
    part, keep = _active_edges(edges, subset, active)
    h, part_gates, norm = _gated_forward(part, _f32(phi), _f32(protos), _f32(emb), float(delta), temperature)
    if keep is None:
      return h, part_gates, norm
    gates = np.zeros(e, np.float32)
    gates[keep] = part_gates
    return h, gates, norm

  h, gates, norm = _callback(forward, shapes, phi, protos, emb, delta, active)
  return (h, gates), (phi, protos, emb, h, gates, norm, active)


def _gated_bwd(edges, temperature, subset, residuals, cotangents):
  phi, protos, emb, h, gates, norm, active = residuals
  dh, dgates = cotangents
  shapes = (jax.ShapeDtypeStruct(phi.shape, jnp.float32), jax.ShapeDtypeStruct(protos.shape, jnp.float32),
            jax.ShapeDtypeStruct(emb.shape, jnp.float32), jax.ShapeDtypeStruct((), jnp.float32))

  def backward(phi, protos, emb, h, gates, norm, dh, dgates, active):
    phi, protos, emb, h, gates, norm, dh, dgates = (_f32(x) for x in (phi, protos, emb, h, gates, norm, dh,
                                                                     dgates))
    part, keep = _active_edges(edges, subset, active)
    if keep is not None:
      gates, dgates = gates[keep], dgates[keep]
    floor = np.maximum(norm, _EPS)
    d_total = dh / floor[:, None]
    d_norm = np.where(norm > _EPS, -np.einsum("ud,ud->u", dh, h) / floor, 0.0).astype(np.float32)
    d_gates = part.sddmm(d_total, emb) + np.repeat(d_norm, np.diff(part.indptr)) + dgates
    d_emb = part.rmatmul(gates, d_total)
    d_s = (d_gates * gates * (1.0 - gates) / temperature).astype(np.float32)
    d_phi = part.rmatmul(d_s, protos)
    d_protos = part.matmul(d_s, phi)
    return d_phi, d_protos, d_emb, np.float32(-d_s.sum())

  d_phi, d_protos, d_emb, d_delta = _callback(backward, shapes, phi, protos, emb, h, gates, norm, dh, dgates,
                                              active)
  return d_phi, d_protos, d_emb, d_delta.astype(jnp.result_type(residuals[0])), None


_gated.defvjp(_gated_fwd, _gated_bwd)


# --- ⟨x_b, y_j⟩ at given columns of each row --------------------------------------------------------------

_ROWS = 48  # rows per gathered chunk: [48, C, 64] float32 is ~2 MB for C ≈ 180, within the L2 cache


def _row_dots(x: np.ndarray, y: np.ndarray, cols: np.ndarray) -> np.ndarray:
  out = np.empty(cols.shape, np.float32)

  def dots(start, stop):
    out[start:stop] = np.matmul(y[cols[start:stop]], x[start:stop, :, None])[..., 0]

  parallel_chunks(dots, cols.shape[0], _ROWS, None if cols.size * x.shape[1] >= _MIN_SPLIT_ENTRIES else 1)
  return out


def _row_dots_grads(g: np.ndarray, x: np.ndarray, y: np.ndarray, cols: np.ndarray):
  b, c = cols.shape
  s = sp.csr_matrix((g.ravel(), cols.ravel(), np.arange(0, b * c + 1, c)), shape=(b, y.shape[0]))
  return np.asarray(s @ y, np.float32), np.asarray(s.T @ x, np.float32)


@jax.custom_vjp
def row_dots(x: jax.Array, y: jax.Array, cols: jax.Array) -> jax.Array:
  """[B, C]: ⟨x_b, y_{cols[b, c]}⟩ for x [B, d], y [N, d] and cols int [B, C] (repeated columns allowed)."""
  return _callback(lambda x, y, cols: _row_dots(_f32(x), _f32(y), np.asarray(cols)),
                   jax.ShapeDtypeStruct(cols.shape, jnp.float32), x, y, cols)


def _row_dots_fwd(x, y, cols):
  return row_dots(x, y, cols), (x, y, cols)


def _row_dots_bwd(residuals, g):
  x, y, cols = residuals
  shapes = (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct(y.shape, jnp.float32))
  dx, dy = _callback(lambda g, x, y, cols: _row_dots_grads(_f32(g), _f32(x), _f32(y), np.asarray(cols)),
                     shapes, g, x, y, cols)
  return dx, dy, None


row_dots.defvjp(_row_dots_fwd, _row_dots_bwd)
