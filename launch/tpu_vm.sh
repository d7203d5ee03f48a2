#!/usr/bin/env bash
# Train hnt_jax on a Cloud TPU VM or pod slice with the standard `gcloud compute tpus tpu-vm` commands.
#
#   launch/tpu_vm.sh [--dry-run] COMMAND --name NAME --zone ZONE --bucket gs://BUCKET [options] [-- ARGS]
#
# COMMAND
#   create    create the VM / pod slice (--type, --version, --spot, --project)
#   install   copy this checkout to every worker, install it with jax[tpu], mount the bucket with gcsfuse
#   train     start the same training command on all workers (in the background; logs to ~/hnt_train.log)
#   logs      stream worker 0's log
#   fetch     copy the run's workdir from the bucket to ./runs/RUN
#   delete    delete the VM
#   run       create, install, train, then print how to follow, fetch and delete
#
# Options
#   --name NAME          TPU VM name (required)
#   --zone ZONE          e.g. us-central2-b (required)
#   --bucket gs://B      Cloud Storage bucket shared by all workers: data under gs://B/data, runs under gs://B/runs
#   --type TYPE          accelerator type (default v4-8; a pod slice such as v4-32 has several workers)
#   --version VERSION    TPU software version (default tpu-ubuntu2204-base)
#   --project PROJECT    gcloud project (default: gcloud's configured one)
#   --spot               a Spot (preemptible) VM
#   --config FILE        hnt_jax config (default configs/taobao.py)
#   --run RUN            run name: the workdir is gs://B/runs/RUN (default: the config's name)
#   ARGS after --        extra arguments for python -m hnt_jax.main (e.g. --config.seed=1)
#
# --dry-run prints every command instead of running it.
# Preemption: a Spot VM that was preempted is re-created with `create` + `install`; then `train` again resumes
# from the latest checkpoint in the shared workdir (hnt_jax resumes any workdir that holds one).
set -euo pipefail

DRY_RUN=0
COMMAND=""
NAME="" ZONE="" BUCKET="" TYPE="v4-8" VERSION="tpu-ubuntu2204-base" PROJECT="" SPOT=0
CONFIG="configs/taobao.py" RUN_NAME=""
EXTRA=()

die() { echo "error: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --name) NAME="$2"; shift ;;
    --zone) ZONE="$2"; shift ;;
    --bucket) BUCKET="${2%/}"; shift ;;
    --type) TYPE="$2"; shift ;;
    --version) VERSION="$2"; shift ;;
    --project) PROJECT="$2"; shift ;;
    --spot) SPOT=1 ;;
    --config) CONFIG="$2"; shift ;;
    --run) RUN_NAME="$2"; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    create|install|train|logs|fetch|delete|run) COMMAND="$1" ;;
    *) die "unknown argument '$1' (see the header of $0)" ;;
  esac
  shift
done

[[ -n "$COMMAND" ]] || die "no command: one of create, install, train, logs, fetch, delete, run"
[[ -n "$NAME" ]] || die "--name is required"
[[ -n "$ZONE" ]] || die "--zone is required"
[[ "$COMMAND" == create || "$COMMAND" == delete || "$COMMAND" == logs || "$BUCKET" == gs://* ]] \
  || die "--bucket gs://BUCKET is required for $COMMAND (data and workdirs live there)"
[[ -n "$RUN_NAME" ]] || RUN_NAME="$(basename "$CONFIG" .py)"

# runs a command, or prints it (shell-quoted) under --dry-run
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@"; printf '\n'
  else
    "$@"
  fi
}

GCLOUD_TPU=(gcloud compute tpus tpu-vm)
COMMON=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=(--project "$PROJECT")
MOUNT="\$HOME/gcs"  # the bucket, mounted on every worker
WORKDIR="$MOUNT/runs/$RUN_NAME"

ssh_all() { run "${GCLOUD_TPU[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command "$1"; }

do_create() {
  local args=("${GCLOUD_TPU[@]}" create "$NAME" "${COMMON[@]}" --accelerator-type "$TYPE" --version "$VERSION")
  [[ "$SPOT" == 1 ]] && args+=(--spot)
  run "${args[@]}"
}

do_install() {
  local repo archive
  repo="$(cd "$(dirname "$0")/.." && pwd)"
  archive="${TMPDIR:-/tmp}/hnt_jax_src.tar.gz"
  run tar czf "$archive" -C "$repo" --exclude=.venv --exclude=.git --exclude=workdirs .
  run "${GCLOUD_TPU[@]}" scp "$archive" "$NAME:hnt_jax_src.tar.gz" "${COMMON[@]}" --worker=all
  ssh_all "mkdir -p ~/hnt_jax && tar xzf ~/hnt_jax_src.tar.gz -C ~/hnt_jax && \
python3 -m pip install -q -U 'jax[tpu]' && python3 -m pip install -q -e ~/hnt_jax && \
mkdir -p $MOUNT && (mountpoint -q $MOUNT || gcsfuse --implicit-dirs ${BUCKET#gs://} $MOUNT)"
}

do_train() {
  local extra=""
  if [[ ${#EXTRA[@]} -gt 0 ]]; then extra="$(printf ' %q' "${EXTRA[@]}")"; fi
  # the same command on every worker; jax.distributed connects them, Orbax writes one shared checkpoint
  ssh_all "cd ~/hnt_jax && nohup python3 -m hnt_jax.main --config $CONFIG --workdir $WORKDIR \
--config.data.dir=$MOUNT/data --config.mesh.data=-1 --config.mesh.distributed=on \
--config.train.progress=False$extra > ~/hnt_train.log 2>&1 &"
}

do_logs() { run "${GCLOUD_TPU[@]}" ssh "$NAME" "${COMMON[@]}" --worker=0 --command "tail -n 100 -f ~/hnt_train.log"; }

do_fetch() {
  run mkdir -p "runs/$RUN_NAME"
  run gcloud storage rsync --recursive "$BUCKET/runs/$RUN_NAME" "runs/$RUN_NAME"
}

do_delete() { run "${GCLOUD_TPU[@]}" delete "$NAME" "${COMMON[@]}" --quiet; }

case "$COMMAND" in
  create) do_create ;;
  install) do_install ;;
  train) do_train ;;
  logs) do_logs ;;
  fetch) do_fetch ;;
  delete) do_delete ;;
  run)
    do_create
    do_install
    do_train
    echo "# follow:  $0 logs --name $NAME --zone $ZONE"
    echo "# results: $0 fetch --name $NAME --zone $ZONE --bucket $BUCKET --run $RUN_NAME"
    echo "# finally: $0 delete --name $NAME --zone $ZONE"
    ;;
esac
