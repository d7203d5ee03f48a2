"""Every shipped config loads; the command line rejects unknown keys and bad values with one clear line."""
import os
import subprocess
import sys

import pytest

from hnt_jax import config as config_lib
from hnt_jax.errors import ConfigError
from hnt_jax.data.load import FORMATS, parse_behaviors
from tests.conftest import REPO, load_config

CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_complete(name):
  config = load_config(name)
  base = config_lib.base_config()
  assert set(config.keys()) == set(base.keys())
  assert config.data.format in FORMATS
  behaviors = parse_behaviors(config.data)
  if config.data.format != "synthetic":
    assert set(behaviors) <= set(config.data.files.keys())


def test_tmall_noclick_variant():
  config = load_config("tmall.py", "noclick")
  assert config.data.behaviors == "collect,cart,buy"
  assert config.data.subdir == "tmall_crgcn_partial_noclick"
  with pytest.raises(ValueError, match="unknown variant"):
    load_config("tmall.py", "bogus")


def test_unknown_key_is_named_with_a_suggestion():
  config = config_lib.base_config()
  with pytest.raises(ConfigError, match=r"'data\.behavior' does not exist; did you mean 'data\.behaviors'"):
    config_lib.check_overrides(config, ["data.behavior=cart,buy"])
  with pytest.raises(ConfigError, match="'nothing.here' does not exist"):
    config_lib.check_overrides(config, ["nothing.here=1"])
  with pytest.raises(ConfigError, match="expected a int"):
    config_lib.check_overrides(config, ["data.n_users=many"])
  config_lib.check_overrides(config, ["data.n_users=12", "data.behaviors=cart,buy", "seed=3"])


def test_argv_parsing_finds_config_and_overrides():
  spec, overrides = config_lib.overrides_from_argv(
      ["--config", "configs/tmall.py:noclick", "--config.seed=3", "--config.data.dir", "/x", "--workdir=w"])
  assert spec == "configs/tmall.py:noclick"
  assert overrides == ["seed=3", "data.dir=/x"]


def run_main(*args, env=None):
  return subprocess.run([sys.executable, "-m", "hnt_jax.main", *args], cwd=REPO, capture_output=True,
                        text=True, env=dict(os.environ, **(env or {})), timeout=300)


def test_cli_stats_on_synthetic_and_clean_errors():
  out = run_main("--config", "configs/synthetic.py", "--mode", "stats",
                 "--config.data.synthetic.n_users=120", "--config.data.behaviors=cart,buy")
  assert out.returncode == 0, out.stderr
  assert "synthetic: 120 users" in out.stdout and "| cart |" in out.stdout and "| view |" not in out.stdout
  assert "- training purchases observed in an auxiliary behavior: " in out.stdout
  bad = run_main("--config", "configs/synthetic.py", "--mode", "stats", "--config.data.nope=1")
  assert bad.returncode == 2
  assert "error: config key 'data.nope' does not exist" in bad.stderr
  assert "Traceback" not in bad.stderr


def test_cli_missing_dataset_says_where_it_comes_from(tmp_path):
  out = run_main("--config", "configs/taobao.py", "--mode", "stats", env={"HNT_DATA_DIR": str(tmp_path)})
  assert out.returncode == 2
  assert "does not exist" in out.stderr and "python -m hnt_jax.data.download taobao" in out.stderr
  assert "Traceback" not in out.stderr
