"""launch/ scripts: valid bash, and their --dry-run output is the expected command sequence."""
import os
import shlex
import subprocess

import pytest

from tests.conftest import REPO

SCRIPTS = ("launch/tpu_vm.sh", "launch/gpu.sh", "launch/local.sh", "launch/bench_device.sh")


def sh(*args, tmp_path=None):
  env = dict(os.environ, TMPDIR=str(tmp_path) if tmp_path else "/tmp", PATH="/usr/bin:/bin")  # no gcloud here
  return subprocess.run(["bash", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
  assert sh("-n", script).returncode == 0


def test_tpu_dry_run_prints_the_whole_sequence_and_runs_nothing(tmp_path):
  out = sh("launch/tpu_vm.sh", "--dry-run", "run", "--name", "hnt-v4", "--zone", "us-central2-b", "--bucket",
           "gs://my-bucket/", "--type", "v4-32", "--spot", "--project", "proj", "--", "--config.seed=1",
           tmp_path=tmp_path)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  commands = [line for line in lines if not line.startswith("#")]
  assert commands[0].startswith("gcloud compute tpus tpu-vm create hnt-v4 --zone us-central2-b --project proj")
  assert "--accelerator-type v4-32" in commands[0] and commands[0].rstrip().endswith("--spot")
  assert commands[1].startswith("tar czf") and "--exclude=.venv" in commands[1]
  assert commands[2].startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in commands[2]
  install, train = commands[3], commands[4]
  assert "--worker=all" in install and "jax\\[tpu\\]" in install and "gcsfuse" in install and "my-bucket" in install
  assert "--worker=all" in train and "hnt_jax.main" in train
  for flag in ("--config.mesh.data=-1", "--config.mesh.distributed=on", "--config.seed=1",
               "runs/taobao", "--config.data.dir="):
    assert flag in train, flag
  assert any("delete --name hnt-v4" in line for line in lines)  # how to clean up is printed
  assert not list(tmp_path.iterdir())  # dry run: not even the source archive was written


@pytest.mark.parametrize("command,expected", [
    ("logs", "--worker=0 --command tail\\ -n\\ 100\\ -f"),
    ("fetch", "gcloud storage rsync --recursive gs://b/runs/taobao runs/taobao"),
    ("delete", "gcloud compute tpus tpu-vm delete n --zone z --quiet"),
])
def test_tpu_single_commands(command, expected):
  out = sh("launch/tpu_vm.sh", "--dry-run", command, "--name", "n", "--zone", "z", "--bucket", "gs://b")
  assert out.returncode == 0, out.stderr
  assert expected in out.stdout


@pytest.mark.parametrize("args,message", [
    (["train", "--name", "n", "--zone", "z"], "--bucket gs://BUCKET is required"),
    (["create", "--zone", "z"], "--name is required"),
    (["--name", "n", "--zone", "z"], "no command"),
    (["create", "--name", "n", "--zone", "z", "--typo"], "unknown argument '--typo'"),
])
def test_tpu_bad_arguments_fail_clearly(args, message):
  out = sh("launch/tpu_vm.sh", "--dry-run", *args)
  assert out.returncode == 2 and message in out.stderr


def test_gpu_dry_run():
  out = sh("launch/gpu.sh", "--dry-run", "--config", "configs/tmall.py", "--model-axis", "2", "--", "--config.seed=3")
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ["python", "-m", "hnt_jax.main", "--config", "configs/tmall.py", "--workdir",
                                "runs/tmall_gpu", "--config.mesh.data=-1", "--config.mesh.model=2",
                                "--config.seed=3"]


def test_bench_device_dry_run_prints_the_two_bench_commands():
  out = sh("launch/bench_device.sh", "--dry-run", "--name", "taobao_x", "--", "--config.seed=3")
  assert out.returncode == 0, out.stderr
  steps, to_best = (shlex.split(line) for line in out.stdout.splitlines())  # %q-quoted shell words
  assert steps[:3] == to_best[:3] == ["python", "-m", "hnt_jax.bench"]
  assert steps[steps.index("--models") + 1] == "hnt,pair_ranker,lightgcn_g"
  assert steps[steps.index("--out") + 1] == "docs/bench/taobao_x.json" and steps[-1] == "--config.seed=3"
  assert "--time_to_best" in to_best and "--time_to_best" not in steps
  assert to_best[to_best.index("--models") + 1] == "hnt,lightgcn_g"
  assert to_best[to_best.index("--out") + 1] == "docs/bench/taobao_x_time_to_best.json"
  assert to_best[-1] == "--config.seed=3"
  default = sh("launch/bench_device.sh", "--dry-run").stdout.split()
  assert "docs/bench/taobao_DEVICE.json" in default
  assert sh("launch/bench_device.sh", "--bogus").returncode == 2


def test_local_dry_run_prints_one_command_per_process():
  out = sh("launch/local.sh", "--dry-run", "--processes", "3", "--devices", "2", "--port", "4321", "--",
           "--config", "configs/synthetic.py", "--workdir", "runs/x")
  assert out.returncode == 0, out.stderr
  lines = [line.split() for line in out.stdout.splitlines()]
  assert len(lines) == 3
  for k, words in enumerate(lines):
    assert words[:5] == ["JAX_COORDINATOR_ADDRESS=localhost:4321", "JAX_NUM_PROCESSES=3", f"JAX_PROCESS_ID={k}",
                         "JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=2"]
    assert words[5:] == ["python", "-m", "hnt_jax.main", "--config", "configs/synthetic.py", "--workdir", "runs/x",
                         "--config.mesh.data=-1"]


@pytest.mark.parametrize("args,message", [
    (["--processes", "0", "--", "--workdir", "w"], "--processes must be a positive whole number"),
    (["--port", "1", "--", "--config", "configs/synthetic.py"], "pass --workdir"),
    (["--nodes", "2"], "unknown argument '--nodes'"),
])
def test_local_bad_arguments_fail_clearly(args, message):
  out = sh("launch/local.sh", "--dry-run", *args)
  assert out.returncode == 2 and message in out.stderr, out.stderr
