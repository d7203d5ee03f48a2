#!/usr/bin/env bash
# Several JAX processes on this machine, joined by jax.distributed as the hosts of a pod slice are: the
# multi-host path (each process transfers its own share of every batch, collectives cross processes, only
# process 0 writes logs and results, every process writes its part of each Orbax checkpoint), run on CPU
# before renting a pod.
#
#   launch/local.sh [--dry-run] [--processes N] [--devices D] [--port P] -- ARGS
#
# Starts N copies of `python -m hnt_jax.main ARGS --config.mesh.data=-1` (unless ARGS set it) with
#   JAX_COORDINATOR_ADDRESS=localhost:P  JAX_NUM_PROCESSES=N  JAX_PROCESS_ID=k  JAX_PLATFORMS=cpu
#   XLA_FLAGS=--xla_force_host_platform_device_count=D
# so that the mesh has N x D CPU devices (collectives between processes over gloo). ARGS must name a
# --workdir. Defaults: N=2, D=2, P a free port. Process 0's output is printed; process k's goes to a log
# file whose path is printed. When one process fails the others are stopped and the script exits with the
# failed process's status. A run started here resumes on any other process or device count (and back).
#
#   launch/local.sh -- --config configs/synthetic.py --workdir runs/local2x2
set -euo pipefail

DRY_RUN=0 PROCESSES=2 DEVICES=2 PORT=""
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --processes) PROCESSES="$2"; shift ;;
    --devices) DEVICES="$2"; shift ;;
    --port) PORT="$2"; shift ;;
    --) shift; ARGS=("$@"); break ;;
    *) echo "error: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
for v in PROCESSES DEVICES; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "error: --${v,,} must be a positive whole number, got '${!v}'" >&2; exit 2; }
done
[[ " ${ARGS[*]:-} " == *" --workdir"* ]] || { echo "error: pass --workdir DIR after -- (all processes share it)" >&2; exit 2; }
PYTHON="${PYTHON:-python}"
if [[ -z "$PORT" ]]; then
  PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
fi

cmd=("$PYTHON" -m hnt_jax.main "${ARGS[@]}")
[[ " ${ARGS[*]} " == *" --config.mesh.data"* ]] || cmd+=(--config.mesh.data=-1)
env_of() {
  echo "JAX_COORDINATOR_ADDRESS=localhost:$PORT JAX_NUM_PROCESSES=$PROCESSES JAX_PROCESS_ID=$1" \
       "JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=$DEVICES"
}
if [[ "$DRY_RUN" == 1 ]]; then
  for ((k = 0; k < PROCESSES; k++)); do
    printf '%s ' $(env_of "$k"); printf '%q ' "${cmd[@]}"; printf '\n'
  done
  exit 0
fi

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/hnt_local.XXXXXX")
pids=()
stop_all() { kill "${pids[@]}" 2>/dev/null || true; }
trap stop_all EXIT INT TERM
for ((k = 0; k < PROCESSES; k++)); do
  if [[ $k == 0 ]]; then
    env $(env_of "$k") "${cmd[@]}" &
  else
    env $(env_of "$k") "${cmd[@]}" > "$LOGS/process_$k.log" 2>&1 &
  fi
  pids+=($!)
done
if ((PROCESSES > 1)); then
  echo "processes 1-$((PROCESSES - 1)): output in $LOGS/process_<k>.log" >&2
fi
status=0
for ((k = 0; k < PROCESSES; k++)); do
  rc=0
  wait -n || rc=$?
  if [[ $rc != 0 ]]; then
    status=$rc
    echo "error: a process exited with status $rc; stopping the others (logs: $LOGS)" >&2
    break
  fi
done
stop_all
trap - EXIT INT TERM
exit "$status"
