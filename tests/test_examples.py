"""examples/ run end to end on small synthetic data (smoke tests: they finish and print their tables)."""
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run_example(*args):
  proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
  return proc.stdout


@pytest.mark.slow
def test_custom_weak_positive_loss(tmp_path):
  out = run_example("examples/custom_weak_positive_loss.py", "--workdir", str(tmp_path), "--epochs", "3",
                    "--users", "150")
  lines = [line for line in out.splitlines() if "test HR@10" in line]
  assert len(lines) == 2 and lines[1].startswith("LightGCN-G + weak-positive term")
  plain = (tmp_path / "plain" / "results.json").read_text()
  custom = (tmp_path / "weak_positive" / "results.json").read_text()
  assert plain != custom  # the extra term changed the training


@pytest.mark.slow
def test_edge_influence_and_hesitation_inspection(tmp_path):
  out = run_example("examples/edge_influence_vs_gates.py", "--workdir", str(tmp_path), "--epochs", "5",
                    "--users", "150")
  rows = [line for line in out.splitlines() if "planted noise ranked first" in line]
  assert [r.split()[0] for r in rows] == ["view", "cart"] and all("gate AUC" in r for r in rows)
  table = run_example("examples/inspect_hesitation.py", "--workdir", str(tmp_path), "--user", "1")
  assert "hesitation set" in table and "| item | confidence | view | cart |" in table
  assert "top-10 recommendations" in table
