"""Sharded training and evaluation on several (simulated) devices equal the single-device run.

Needs 4 devices: `tests/test_distributed.py` runs this file in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (set before JAX starts).
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.sparse as sp

from hnt_jax import distributed, graph
from hnt_jax.train.loop import Run, train_and_evaluate
from tests.test_graph import dense_normalized, random_matrix
from tests.train.test_loop import Interrupt, interrupt_after, read_lines, small_config

pytestmark = pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 devices (run by test_distributed.py)")


def mesh_cfg(data, model=1):
  return ml_collections.ConfigDict(dict(data=data, model=model, distributed="off"))


@pytest.mark.parametrize("data,model", [(4, 1), (2, 2), (3, 1)])
def test_row_sharded_propagation_and_gradient_equal_dense(data, model):
  mesh = distributed.make_mesh(mesh_cfg(data, model))
  rng = np.random.default_rng(data)
  dense = random_matrix(rng, 11, 9, 0.3)
  g = graph.behavior_graph(sp.csr_matrix(dense), mesh=mesh)
  assert g.adj is None and g.shards.rows.shape[0] == data  # each device holds its block of rows only
  a = dense_normalized(dense)
  x = rng.normal(size=(20, 5)).astype(np.float32)
  out = jax.jit(lambda x: graph.propagate(g, x))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(out), a @ x, rtol=1e-5, atol=1e-6)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(graph.propagate(g, x)))))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(grad), a.T @ np.cos(a @ x), rtol=1e-5, atol=1e-6)


def sharded_config(model_name, data=-1, model=1, **train):
  config = small_config(**{"epochs": 2, "eval_every": 1, "checkpoint_every": 1, **train})
  config.model.name = model_name
  config.model.hesitation.refresh_every = 1  # HNT's hesitation sets change every epoch
  config.mesh.update(data=data, model=model, distributed="off")
  return config


def assert_same_run(a_dir, b_dir, a, b, tol=1e-4):
  la, lb = read_lines(a_dir / "metrics.jsonl"), read_lines(b_dir / "metrics.jsonl")
  assert [r["epoch"] for r in la] == [r["epoch"] for r in lb]
  np.testing.assert_allclose([r["loss"] for r in la], [r["loss"] for r in lb], rtol=tol)
  for split in ("valid", "test"):
    for key, value in a[split].items():
      assert b[split][key] == pytest.approx(value, abs=5e-3), (split, key)


@pytest.fixture(scope="module")
def hnt_reference(tmp_path_factory):
  """HNT trained on one device, the reference of the HNT tests below."""
  workdir = tmp_path_factory.mktemp("hnt_one")
  return workdir, train_and_evaluate(sharded_config("hnt", data=1), str(workdir))


@pytest.mark.parametrize("model_name,data,model", [("lightgcn", -1, 1), ("lightgcn_g", 2, 2)])
def test_training_on_several_devices_matches_one(tmp_path, model_name, data, model):
  """(HNT on 4 devices is checked by the checkpoint test below, against the same single-device reference.)"""
  one_dir, one = tmp_path / "one", train_and_evaluate(sharded_config(model_name, data=1), str(tmp_path / "one"))
  many = train_and_evaluate(sharded_config(model_name, data=data, model=model), str(tmp_path / "many"))
  assert one["device"]["mesh"] == "single device"
  assert many["device"]["mesh"] == f"data={4 // model if data == -1 else data} x model={model}"
  assert_same_run(one_dir, tmp_path / "many", one, many)


def test_sharded_evaluation_equals_unsharded():
  cfg_one, cfg_many = sharded_config("lightgcn", data=1), sharded_config("lightgcn", data=-1)
  cfg_many.eval.chunk_cells = 40 * 150 * 3  # several chunks
  one, many = Run(cfg_one), Run(cfg_many)
  params, state = one.init_variables()
  a = one.evaluate(params, state, "test")
  b = many.evaluate(jax.device_put(params, distributed.replicated(many.mesh)), state, "test")
  assert many.evaluators["test"].chunk % 4 == 0 and many.evaluators["test"].users.shape[0] > 1
  assert a.keys() == b.keys()
  for key in a:
    assert b[key] == pytest.approx(a[key], abs=1e-6), key


def test_hnt_checkpoint_from_four_devices_resumes_on_one(tmp_path, hnt_reference):
  """HNT (parameters, optimizer state and hesitation sets) interrupted on 4 devices, resumed on 1."""
  ref_dir, reference = hnt_reference
  with pytest.raises(Interrupt):
    train_and_evaluate(sharded_config("hnt", data=-1), str(tmp_path / "cut"), hooks=[interrupt_after(1)])
  resumed = train_and_evaluate(sharded_config("hnt", data=1), str(tmp_path / "cut"))
  assert resumed["epochs_run"] == 2 and resumed["device"]["mesh"] == "single device"
  assert_same_run(ref_dir, tmp_path / "cut", reference, resumed)
  assert resumed["valid_diagnostics"]["hesitation_coverage"] > 0  # the sets were saved, moved and used


def test_checkpoint_from_one_device_resumes_on_four(tmp_path):
  reference = train_and_evaluate(sharded_config("lightgcn", data=1, epochs=4), str(tmp_path / "ref"))
  with pytest.raises(Interrupt):
    train_and_evaluate(sharded_config("lightgcn", data=1, epochs=4), str(tmp_path / "cut"),
                       hooks=[interrupt_after(2)])
  resumed = train_and_evaluate(sharded_config("lightgcn", data=-1, epochs=4), str(tmp_path / "cut"))
  assert resumed["epochs_run"] == 4 and resumed["device"]["mesh"] == "data=4 x model=1"
  assert_same_run(tmp_path / "ref", tmp_path / "cut", reference, resumed)


def test_bad_mesh_settings_are_config_errors():
  from hnt_jax.data.errors import ConfigError
  with pytest.raises(ConfigError, match="mesh.model=3"):
    distributed.make_mesh(mesh_cfg(-1, 3))
  with pytest.raises(ConfigError, match="needs 8 devices"):
    distributed.make_mesh(mesh_cfg(8))
  with pytest.raises(ConfigError, match="multiple of the mesh's data size 4"):
    distributed.check_batch_size(distributed.make_mesh(mesh_cfg(4)), 250)
