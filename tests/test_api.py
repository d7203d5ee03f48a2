"""Every name docs/api.md lists is importable from hnt_jax, and the package exports nothing undocumented."""
import re

import hnt_jax
from tests.conftest import REPO


def documented_names():
  text = (REPO / "docs" / "api.md").read_text()
  table = text.split("## Names", 1)[1].split("## ", 1)[0]
  names = set()
  for line in table.splitlines():
    if line.startswith("| `"):
      first_cell = line.split("|")[1]
      names.update(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", first_cell))
  return names


def test_every_documented_name_imports():
  names = documented_names()
  assert len(names) > 30
  for name in sorted(names):
    assert getattr(hnt_jax, name) is not None, name
  exec(f"from hnt_jax import {', '.join(sorted(names))}", {})


def test_exports_are_documented():
  assert set(hnt_jax.__all__) == documented_names()


def test_unknown_name_is_an_attribute_error():
  try:
    hnt_jax.not_a_name
  except AttributeError as e:
    assert "not_a_name" in str(e)
  else:
    raise AssertionError("expected AttributeError")


def test_the_build_by_hand_example_runs():
  text = (REPO / "docs" / "api.md").read_text()
  snippet = text.split("Build everything by hand", 1)[1].split("```python", 1)[1].split("```", 1)[0]
  scope = {}
  exec(snippet, scope)
  assert set(scope["grads"]) >= {"users", "items"} and scope["graphs"].weak is not None
