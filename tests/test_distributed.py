"""Runs the sharded-execution tests (tests/distributed) on 4 simulated CPU devices in a subprocess: the
device count must be set through XLA_FLAGS before JAX starts."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_sharded_execution_on_four_simulated_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/distributed"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  tail = (proc.stdout + proc.stderr)[-4000:]
  assert proc.returncode == 0, tail
  assert " passed" in tail and "skipped" not in tail, tail


def test_launcher_environment_gives_initialize_its_arguments():
  from hnt_jax.distributed import initialize_arguments
  from hnt_jax.errors import ConfigError
  assert initialize_arguments({}) == {}
  assert initialize_arguments({"JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}) == {"num_processes": 4,
                                                                                     "process_id": 3}
  for environ, message in [({"JAX_NUM_PROCESSES": "2"}, "JAX_PROCESS_ID is not"),
                           ({"JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "'two' is not a whole number"),
                           ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "must be in 0 .. JAX_NUM_PROCESSES - 1")]:
    with pytest.raises(ConfigError, match=message):
      initialize_arguments(environ)
