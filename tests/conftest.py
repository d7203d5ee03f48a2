import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def real_data_dir():
  """The public datasets: $HNT_DATA_DIR, else ../shared/data beside the checkout; None when absent."""
  for candidate in (os.environ.get("HNT_DATA_DIR"), REPO.parent / "shared" / "data"):
    if candidate and pathlib.Path(candidate).is_dir():
      return pathlib.Path(candidate)
  return None


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
  """Every test writes its processed-data cache to a temporary folder, never to the user's cache."""
  monkeypatch.setenv("HNT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def data_dir():
  path = real_data_dir()
  if path is None:
    pytest.skip("public datasets not found: set HNT_DATA_DIR (see README, 'Data')")
  return path


def load_config(name: str, arg: str = ""):
  from hnt_jax.config import load_config_file
  spec = str(REPO / "configs" / name) + (f":{arg}" if arg else "")
  return load_config_file(spec)
