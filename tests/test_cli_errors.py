"""The command-line tools under bad arguments and damaged workdirs: one line on stderr, exit status 2, or
a correct result; never a traceback, an empty answer with status 0, or invalid JSON."""
import json
import shutil
import subprocess
import sys

import pytest

from hnt_jax import recommend, report
from hnt_jax.config import base_config, load_config_file
from hnt_jax.errors import ConfigError, WorkdirError
from hnt_jax.train.loop import train_and_evaluate
from tests.conftest import REPO

N_ITEMS = 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("runs") / "mf_s0"
  config = base_config()
  config.data.synthetic.n_users, config.data.synthetic.n_items = 50, N_ITEMS
  config.model.name = "mf"
  config.train.update(dict(epochs=2, eval_every=1, batch_size=64, progress=False))
  train_and_evaluate(config, str(workdir))
  return workdir


def tool(module, *args):
  out = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert "Traceback" not in out.stderr, out.stderr
  return out


def strict_json(text):
  def refuse(name):
    raise ValueError(f"not JSON: {name}")
  return json.loads(text, parse_constant=refuse)


def test_k_equal_to_the_catalogue_lists_only_unbought_items(trained, capsys):
  assert recommend.main(["--workdir", str(trained), "--users", "0,1", "--k", str(N_ITEMS), "--json"]) == 0
  rows = strict_json(capsys.readouterr().out)
  for user in (0, 1):
    mine = [r for r in rows if r["user"] == user]
    assert 0 < len(mine) < N_ITEMS and [r["rank"] for r in mine] == list(range(1, len(mine) + 1))
  ds_config = recommend.load_run_config(str(trained))
  from hnt_jax.data.load import load_dataset
  bought = load_dataset(ds_config.data).train_target
  assert not any(bought[r["user"], r["item"]] for r in rows)


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one_is_a_usage_error(trained, k, capsys):
  with pytest.raises(SystemExit) as err:
    recommend.main(["--workdir", str(trained), "--users", "0", "--k", str(k)])
  assert err.value.code == 2 and f"--k {k}: must be at least 1" in capsys.readouterr().err


def test_k_above_the_catalogue_and_unknown_users(trained):
  with pytest.raises(ConfigError, match=f"has only {N_ITEMS} items"):
    recommend.recommend(str(trained), [0], k=N_ITEMS + 1)
  out = tool("hnt_jax.recommend", "--workdir", str(trained), "--users", "0,999")
  assert out.returncode == 2 and "user id 999 is not in synthetic" in out.stderr


def test_recommend_without_checkpoint_or_config(trained, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(WorkdirError, match="no config.json"):
    recommend.recommend(str(empty), [0])
  shutil.copy(trained / "config.json", empty / "config.json")
  out = tool("hnt_jax.recommend", "--workdir", str(empty), "--users", "0")
  assert out.returncode == 2 and out.stderr.startswith(f"error: {empty}: no checkpoint: train first")


def test_report_names_a_truncated_results_file(trained, tmp_path):
  copy = tmp_path / "runs" / "copy"
  shutil.copytree(trained, copy)
  text = (copy / "results.json").read_text()
  (copy / "results.json").write_text(text[:100])
  out = tool("hnt_jax.report", str(tmp_path / "runs"))
  assert out.returncode == 2 and out.stderr.startswith(f"error: {copy / 'results.json'}:")
  assert "not valid JSON" in out.stderr


def test_report_counts_a_copied_run_once(trained, tmp_path, capsys):
  shutil.copytree(trained, tmp_path / "a")
  shutil.copytree(trained, tmp_path / "b")
  assert report.main([str(tmp_path)]) == 0
  captured = capsys.readouterr()
  row = next(line for line in captured.out.splitlines() if line.startswith("| mf"))
  assert "| 0 |" in row and "±" not in row
  assert f"{tmp_path / 'b'} repeats the setting and seed 0 of {tmp_path / 'a'}" in captured.err


def test_config_files_that_do_not_exist_or_define_no_get_config(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    load_config_file(str(tmp_path / "nope.py"))
  (tmp_path / "empty.py").write_text("x = 1\n")
  with pytest.raises(ConfigError, match=r"does not define get_config\(\)"):
    load_config_file(str(tmp_path / "empty.py"))
  (tmp_path / "broken.py").write_text("def get_config(:\n")
  with pytest.raises(ConfigError, match=r"broken.py:1: "):
    load_config_file(str(tmp_path / "broken.py"))
  out = tool("hnt_jax.main", "--config", str(tmp_path / "empty.py"), "--workdir", str(tmp_path / "w"))
  assert out.returncode == 2 and "does not define get_config()" in out.stderr


def test_wrong_model_name_is_one_line(tmp_path):
  out = tool("hnt_jax.main", "--config", "configs/synthetic.py", f"--workdir={tmp_path}/w",
             "--config.model.name=hnt2")
  assert out.returncode == 2 and out.stderr.startswith("error: --config.model.name='hnt2' is not one of")
  assert not (tmp_path / "w").exists()
