"""Many devices and hosts: the device mesh, shardings, row-sharded propagation, multi-host start-up.

The mesh has two axes: `data` (batches, evaluation users and the rows of every propagation are split over it)
and `model` (embedding tables are split by rows over it when it is larger than 1). Parameters and optimizer
state are replicated otherwise. Everything runs through `jax.jit` with sharding annotations; the one explicit
collective program is the row-sharded propagation (`shard_map`), where each device multiplies its block of
adjacency rows, so adjacency memory per device shrinks as devices grow.

Config (`config.mesh`): `data` (-1: all devices not used by `model`), `model` (default 1), `distributed`
("auto": call `jax.distributed.initialize()` when the environment names a coordinator or several TPU
workers; "on"; "off"). With one device in total nothing here is used and runs are unchanged.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hnt_jax.errors import ConfigError

log = logging.getLogger(__name__)
DATA, MODEL = "data", "model"

_INITIALIZED = False


def multi_process_environment() -> bool:
  """Whether a launcher set up several processes (coordinator address, or several Cloud TPU workers)."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("COORDINATOR_ADDRESS"):
    return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h.strip()]) > 1


def initialize_arguments(environ=None) -> dict:
  """`jax.distributed.initialize` arguments from JAX_NUM_PROCESSES and JAX_PROCESS_ID, where a launcher set
  them (JAX reads JAX_COORDINATOR_ADDRESS itself, and finds all three on Cloud TPU, Slurm and Open MPI)."""
  environ = os.environ if environ is None else environ
  names = {"num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}
  out = {}
  for key, var in names.items():
    value = environ.get(var, "").strip()
    if value:
      try:
        out[key] = int(value)
      except ValueError:
        raise ConfigError(f"environment variable {var}={value!r} is not a whole number") from None
  if len(out) == 1:
    (given,) = out
    raise ConfigError(f"{names[given]} is set but {names[({*names} - {given}).pop()]} is not; a launcher sets "
                      "both (or neither, where JAX finds them itself)")
  if out and not 0 <= out["process_id"] < out["num_processes"]:
    raise ConfigError(f"JAX_PROCESS_ID={out['process_id']} must be in 0 .. JAX_NUM_PROCESSES - 1 "
                      f"(JAX_NUM_PROCESSES={out['num_processes']})")
  return out


def maybe_initialize(mesh_cfg) -> bool:
  """Calls `jax.distributed.initialize()` once when `mesh.distributed` says so; True if it did (now or
  before). Must run before any other JAX call in the process."""
  global _INITIALIZED
  mode = str(mesh_cfg.distributed)
  if mode not in ("auto", "on", "off"):
    raise ConfigError(f"mesh.distributed={mode!r} is not one of auto, on, off")
  if _INITIALIZED:
    return True
  if mode == "on" or (mode == "auto" and multi_process_environment()):
    jax.distributed.initialize(**initialize_arguments())
    _INITIALIZED = True
    log.info("jax.distributed initialized: process %d of %d", jax.process_index(), jax.process_count())
  return _INITIALIZED


def is_main_process() -> bool:
  """Only process 0 writes logs, metrics and reports."""
  return jax.process_index() == 0


def agree(flag: bool) -> bool:
  """Process 0's `flag` on every process: the processes of a run decide together where their clocks or
  files could tell them apart (a time limit), or the others would wait forever in the next collective."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.bool_(flag)))


def make_mesh(mesh_cfg) -> Optional[Mesh]:
  """The ("data", "model") mesh the config asks for, or None when it has a single device."""
  n = jax.device_count()
  model = int(mesh_cfg.model)
  data = int(mesh_cfg.data)
  if model < 1 or n % model:
    raise ConfigError(f"mesh.model={model} must be a positive divisor of the {n} available device(s)")
  if data == -1:
    data = n // model
  if data < 1 or data * model > n:
    raise ConfigError(f"mesh.data={data} x mesh.model={model} needs {data * model} devices; {n} available")
  if data * model == 1:
    return None
  devices = np.asarray(jax.devices()[:data * model]).reshape(data, model)
  return Mesh(devices, (DATA, MODEL))


def data_size(mesh: Optional[Mesh]) -> int:
  return 1 if mesh is None else int(mesh.shape[DATA])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def rows_sharding(mesh: Mesh, ndim: int = 1, axis: int = 0) -> NamedSharding:
  """Split along `axis` over `data`, the other axes whole."""
  spec = [None] * ndim
  spec[axis] = DATA
  return NamedSharding(mesh, P(*spec))


def put_global(x: Any, sharding: NamedSharding) -> jax.Array:
  """A global array with `sharding` from a value every process holds in full; each process transfers only
  the shards its own devices hold (on one host this is `jax.device_put`)."""
  host = np.asarray(x)
  if jax.process_count() == 1:
    return jax.device_put(host, sharding)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def split_rows(x: Any, mesh: Mesh) -> jax.Array:
  """`x` split by its first axis over `data`, each device holding one block of rows. The rows are padded
  with zeros to a multiple of the data size; the padded rows index nothing, and the code that reads such a
  table looks rows up by index, so they are never read as data."""
  host = np.asarray(x)
  pad = -host.shape[0] % data_size(mesh)
  if pad:
    host = np.concatenate([host, np.zeros((pad,) + host.shape[1:], host.dtype)])
  return put_global(host, rows_sharding(mesh, host.ndim))


def param_shardings(params: Any, mesh: Mesh, n_users: int, n_items: int) -> Any:
  """Embedding tables ([n_users or n_items, d]) split by rows over `model` when it is larger than 1; every
  other parameter replicated."""
  split = int(mesh.shape[MODEL]) > 1

  def one(x):
    if split and x.ndim == 2 and x.shape[0] in (n_users, n_items) and x.shape[0] % mesh.shape[MODEL] == 0:
      return NamedSharding(mesh, P(MODEL, None))
    return replicated(mesh)

  return jax.tree.map(one, params)


def state_shardings(state: Any, mesh: Mesh, n_users: int, n_items: int) -> Any:
  """Shardings of a TrainState: the optimizer's per-parameter moments follow their parameter."""
  by_shape = {}
  for x, s in zip(jax.tree.leaves(state.params),
                  jax.tree.leaves(param_shardings(state.params, mesh, n_users, n_items))):
    by_shape.setdefault((x.shape, x.dtype), s)

  def one(x):
    if hasattr(x, "shape") and (x.shape, x.dtype) in by_shape and len(x.shape) == 2:
      return by_shape[(x.shape, x.dtype)]
    return replicated(mesh)

  return jax.tree.map(one, state)


# --- row-sharded propagation -------------------------------------------------------------------------

@flax.struct.dataclass
class RowShards:
  """A sparse matrix's entries split by row into `data`-many equal blocks of rows (the adjacency Â, or a
  behavior's user x item incidence R).

  rows: [D, E] row index inside the device's block; cols: [D, E] global column; weights: [D, E] (0 where
  padded). Device d owns rows [d * block, (d + 1) * block) of the output. positions: [nnz] where each entry,
  in the order given to `row_shards`, sits in the flattened [D * E] layout (to return per-entry values,
  such as gates, in that order).
  """
  rows: jax.Array
  cols: jax.Array
  weights: jax.Array
  positions: jax.Array
  block: int = flax.struct.field(pytree_node=False)
  n: int = flax.struct.field(pytree_node=False)
  mesh: Mesh = flax.struct.field(pytree_node=False)


def row_shards(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, n: int, mesh: Mesh) -> RowShards:
  """Splits the entries (rows sorted or not) of a matrix with n rows into the mesh's `data` blocks of rows."""
  d = data_size(mesh)
  block = -(-n // d)
  owner = rows // block
  order = np.argsort(owner, kind="stable")
  counts = np.bincount(owner, minlength=d)
  width = max(int(counts.max(initial=0)), 1)
  out_r = np.zeros((d, width), np.int32)
  out_c = np.zeros((d, width), np.int32)
  out_w = np.zeros((d, width), np.float32)
  start = np.concatenate([[0], np.cumsum(counts)])
  positions = np.zeros(rows.shape[0], np.int32)
  for dev in range(d):
    take = order[start[dev]:start[dev + 1]]
    out_r[dev, :take.shape[0]] = rows[take] - dev * block
    out_c[dev, :take.shape[0]] = cols[take]
    out_w[dev, :take.shape[0]] = weights[take]
    positions[take] = dev * width + np.arange(take.shape[0])
  sharding = rows_sharding(mesh, ndim=2)
  return RowShards(rows=put_global(out_r, sharding), cols=put_global(out_c, sharding),
                   weights=put_global(out_w, sharding), positions=put_global(positions, replicated(mesh)),
                   block=block, n=n, mesh=mesh)


def sharded_matmul(shards: RowShards, x: jax.Array) -> jax.Array:
  """A · x with each device computing its block of rows from the whole x (gathered where needed)."""
  d = data_size(shards.mesh)
  padded = shards.block * d

  def local(rows, cols, weights, x_full):
    msg = weights[0][:, None] * x_full[cols[0]]
    return jax.ops.segment_sum(msg, rows[0], num_segments=shards.block)

  f = jax.shard_map(local, mesh=shards.mesh, in_specs=(P(DATA), P(DATA), P(DATA), P()), out_specs=P(DATA))
  out = f(shards.rows, shards.cols, shards.weights, x)
  return out[:shards.n] if padded != shards.n else out


def sharded_gated_mean(shards: RowShards, emb: jax.Array, phi: Optional[jax.Array] = None,
                       protos: Optional[jax.Array] = None, delta: Any = 0.0, temperature: float = 1.0
                       ) -> tuple[jax.Array, jax.Array]:
  """For a user x item incidence split by user rows: h_u = Σ_j g_uj w_uj e_j / Σ_j g_uj w_uj (0 without
  edges), each device computing its block of users from its own edges, with g_uj = σ((⟨φ_j, π_u⟩ − δ) / τ)
  (g = 1 without `phi`). Returns (h [n, d], g per entry in the order given to `row_shards`)."""
  d = data_size(shards.mesh)
  padded = shards.block * d
  gated = phi is not None
  if gated:
    protos = jnp.pad(protos, ((0, padded - protos.shape[0]), (0, 0)))
  else:  # placeholders of the right sharding; unused
    phi, protos = jnp.zeros((1, 1), emb.dtype), jnp.zeros((padded, 1), emb.dtype)

  def local(rows, cols, weights, emb_full, phi_full, protos_block, delta):
    r, c, w = rows[0], cols[0], weights[0]
    if gated:
      gate = jax.nn.sigmoid((jnp.sum(phi_full[c] * protos_block[r], axis=-1) - delta) / temperature)
    else:
      gate = jnp.ones(w.shape, emb_full.dtype)
    gw = gate * w
    total = jax.ops.segment_sum(gw[:, None] * emb_full[c], r, num_segments=shards.block)
    norm = jax.ops.segment_sum(gw, r, num_segments=shards.block)
    return total / jnp.maximum(norm, 1e-8)[:, None], gate[None]

  f = jax.shard_map(local, mesh=shards.mesh, in_specs=(P(DATA), P(DATA), P(DATA), P(), P(), P(DATA), P()),
                    out_specs=(P(DATA), P(DATA)))
  h, gates = f(shards.rows, shards.cols, shards.weights, emb, phi, protos, jnp.asarray(delta, emb.dtype))
  return (h[:shards.n] if padded != shards.n else h), gates.reshape(-1)[shards.positions]


def describe(mesh: Optional[Mesh]) -> str:
  """"data=4 x model=1" (or "single device")."""
  if mesh is None:
    return "single device"
  return " x ".join(f"{name}={size}" for name, size in mesh.shape.items())


def check_batch_size(mesh: Optional[Mesh], batch_size: int) -> None:
  """Batches are split evenly over `data`: the batch size must divide."""
  d = data_size(mesh)
  if batch_size % d:
    raise ConfigError(f"train.batch_size={batch_size} must be a multiple of the mesh's data size {d}")
