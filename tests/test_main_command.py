"""The design card's command, `python -m hnt_jax.main --config configs/<name>.py`, with no other flag."""
import json
import os
import re
import subprocess
import sys

from tests.conftest import REPO

SMALL = ["--config.model.name=lightgcn", "--config.data.synthetic.n_users=100",
         "--config.data.synthetic.n_items=80", "--config.train.epochs=4", "--config.train.eval_every=2",
         "--config.train.progress=False"]


def main(cwd, *args, env=None):
  return subprocess.run([sys.executable, "-m", "hnt_jax.main", *args], cwd=cwd, capture_output=True, text=True,
                        timeout=600, env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))


def test_without_workdir_a_run_goes_to_a_printed_default_and_resumes_there(tmp_path):
  out = main(tmp_path, "--config", str(REPO / "configs" / "synthetic.py"), *SMALL)
  assert out.returncode == 0, out.stderr
  first = out.stdout.splitlines()[0]
  match = re.fullmatch(r"workdir: (runs/synthetic/lightgcn-\d{8}-\d{6}) \(to resume this run: --workdir \1\)",
                       first)
  assert match, first
  workdir = tmp_path / match.group(1)
  results = json.loads((workdir / "results.json").read_text())
  again = main(tmp_path, "--config", str(REPO / "configs" / "synthetic.py"), *SMALL, f"--workdir={match.group(1)}")
  assert again.returncode == 0, again.stderr
  assert json.loads((workdir / "results.json").read_text())["test"] == results["test"]
  report = subprocess.run([sys.executable, "-m", "hnt_jax.report", "runs"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert report.returncode == 0, report.stderr
  assert any(line.startswith("| lightgcn | synthetic |") for line in report.stdout.splitlines())


def test_design_card_command_on_missing_data_says_where_it_comes_from(tmp_path):
  empty = tmp_path / "data"
  empty.mkdir()
  out = main(tmp_path, "--config", str(REPO / "configs" / "yelp.py"), env={"HNT_DATA_DIR": str(empty)})
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "dataset folder" in out.stderr and "does not exist" in out.stderr and "KHGT" in out.stderr
  assert out.stdout.startswith("workdir: runs/yelp/hnt-")
  assert not (tmp_path / "runs").exists()  # the default workdir it made is removed: nothing was written


def test_default_workdir_is_refused_for_several_processes(monkeypatch):
  import pytest

  from hnt_jax.config import base_config
  from hnt_jax.errors import ConfigError
  from hnt_jax.cli import default_workdir
  assert default_workdir(base_config()).startswith(os.path.join("runs", "synthetic", "hnt-"))
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
  with pytest.raises(ConfigError, match="needs --workdir"):
    default_workdir(base_config())
