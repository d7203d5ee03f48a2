"""Every bad setting is named in one line before any data is read or anything is written."""
import os
import subprocess
import sys

import pytest

from hnt_jax.config import base_config
from hnt_jax.config_checks import validate
from hnt_jax.errors import ConfigError
from tests.conftest import REPO, load_config

CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_pass(name):
  validate(load_config(name))


BAD = [
    ("train.learning_rate", -1.0, "above 0"),
    ("train.learning_rate", float("nan"), "above 0"),
    ("train.learning_rate", float("inf"), "finite"),
    ("train.epochs", 0, "at least 1"),
    ("train.epochs", -3, "at least 1"),
    ("train.batch_size", 0, "at least 1"),
    ("train.eval_every", 0, "at least 1"),
    ("train.checkpoint_every", 0, "at least 1"),
    ("train.patience", -1, "at least 0"),
    ("train.time_limit_minutes", -1.0, "at least 0"),
    ("train.optimizer", "adagrad", "not one of adam, adamw, sgd"),
    ("train.lr_schedule", "linear", "not one of constant, cosine"),
    ("train.lr_final_fraction", 1.5, "from 0.0 to 1.0"),
    ("train.propagation", "gpu", "not one of auto, bcoo, host"),
    ("model.embed_dim", 0, "at least 1"),
    ("model.n_layers", -1, "at least 0"),
    ("model.hnt.gate_temperature", 0.0, "above 0"),
    ("model.hnt.sim_temperature", -0.1, "above 0"),
    ("model.init_std", 0.0, "above 0"),
    ("model.l2", -1e-4, "at least 0"),
    ("model.hnt.lambda_hes", -0.5, "at least 0"),
    ("model.hnt.gate_edge_budget", 1.5, "from 0.0 to 1.0"),
    ("model.name", "hnt2", "not one of"),
    ("model.hnt.encoder", "tree", "not one of cascade, parallel"),
    ("model.heuristic.weights", "1,x", "list of numbers"),
    ("model.hnt.hes_threshold", 1.2, "from 0.0 to 1.0"),
    ("model.hnt.hes_size", 0, "at least 1"),
    ("model.hnt.hes_refresh_every", 0, "at least 1"),
    ("eval.ks", "0", "positive integers"),
    ("eval.ks", "10,abc", "positive integers"),
    ("eval.ks", "", "positive integers"),
    ("eval.n_negatives", 0, "at least 1"),
    ("eval.n_negatives", -5, "at least 1"),
    ("eval.protocol", "partial", "not one of full, sampled"),
    ("data.n_users", 10 ** 12, "from 0 to 2147483647"),
    ("data.split", "random", "not one of holdout_valid, published"),
    ("data.synthetic.n_users", 0, "from 2"),
    ("mesh.data", 0, "-1 for all devices"),
    ("experiments.published_epochs", 0, "at least 1"),
]


def set_key(config, dotted, value):
  *path, last = dotted.split(".")
  node = config
  for part in path:
    node = node[part]
  with node.ignore_type():
    node[last] = value


@pytest.mark.parametrize("key,value,message", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_value_is_named(key, value, message):
  config = base_config()
  set_key(config, key, value)
  with pytest.raises(ConfigError) as err:
    validate(config)
  assert f"--config.{key}=" in str(err.value) and message in str(err.value)


def test_heuristic_weights_must_match_the_auxiliary_behaviors():
  config = base_config()  # view, cart, buy: two auxiliary behaviors
  config.model.heuristic.weights = "1,2,3"
  with pytest.raises(ConfigError, match="3 weights for the 2 auxiliary behaviors"):
    validate(config)
  config.model.heuristic.weights = "1,2.5"
  validate(config)


def test_pair_ranker_needs_an_auxiliary_behavior():
  config = base_config()
  config.model.name = "pair_ranker"
  validate(config)
  config.data.behaviors = "buy"
  with pytest.raises(ConfigError, match="pair_ranker needs at least one auxiliary behavior"):
    validate(config)


def test_a_key_outside_the_schema_is_named():
  config = base_config()
  config.model.update({"heuristic_weights": "0,0"})  # ConfigDict.update adds keys silently
  with pytest.raises(ConfigError, match="'model.heuristic_weights' does not exist; did you mean 'model.heuristic.weights'"):
    validate(config)


def test_select_metric_must_be_one_of_the_evaluated_ks():
  config = base_config()
  config.train.select_metric = "ndcg@5"
  with pytest.raises(ConfigError, match="select_metric='ndcg@5'.*eval.ks"):
    validate(config)


def test_bad_setting_on_the_command_line_stops_before_anything_is_written(tmp_path):
  workdir = tmp_path / "run"
  for flag in ("--config.train.learning_rate=-1", "--config.eval.ks=10,abc", "--config.train.epochs=0"):
    out = subprocess.run([sys.executable, "-m", "hnt_jax.main", "--config", "configs/synthetic.py",
                          f"--workdir={workdir}", flag], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("error: --config." + flag.split("--config.")[1].split("=")[0])
    assert not workdir.exists()


def test_too_many_sampled_negatives_for_the_catalogue_stops_before_config_json(tmp_path):
  from hnt_jax.train.loop import train_and_evaluate
  config = base_config()
  config.data.synthetic.n_users, config.data.synthetic.n_items = 60, 40
  config.model.name = "mf"
  config.eval.protocol, config.eval.n_negatives = "sampled", 40
  config.train.update(dict(epochs=1, batch_size=64, progress=False))
  with pytest.raises(ConfigError, match="eval.n_negatives=40"):
    train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "config.json").exists()
  config.eval.n_negatives = 10  # the corrected command is not blocked by a left-over config.json
  assert train_and_evaluate(config, str(tmp_path))["status"] == "completed"
