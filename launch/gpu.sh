#!/usr/bin/env bash
# Train hnt_jax on every GPU of one host (data-parallel over a ("data", "model") mesh), or on several hosts.
#
#   launch/gpu.sh [--dry-run] [--config FILE] [--workdir DIR] [--model-axis N] [-- ARGS]
#
# One host: all local GPUs form the mesh (`--config.mesh.data=-1`); batches, evaluation users and the rows
# of every propagation are split over them. `--model-axis N` also splits the embedding tables over N GPUs.
# Several hosts: run the same command on each host with JAX_COORDINATOR_ADDRESS=host0:port,
# JAX_NUM_PROCESSES and JAX_PROCESS_ID set; `mesh.distributed=auto` then calls jax.distributed.initialize(),
# and the workdir must be a folder every host sees (a shared file system).
# Preemption or a crash: run the same command again; it resumes from the workdir's latest checkpoint.
set -euo pipefail

DRY_RUN=0 CONFIG="configs/taobao.py" WORKDIR="" MODEL_AXIS=1
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --config) CONFIG="$2"; shift ;;
    --workdir) WORKDIR="$2"; shift ;;
    --model-axis) MODEL_AXIS="$2"; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "error: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$WORKDIR" ]] || WORKDIR="runs/$(basename "$CONFIG" .py)_gpu"

cmd=(python -m hnt_jax.main --config "$CONFIG" --workdir "$WORKDIR" --config.mesh.data=-1
     "--config.mesh.model=$MODEL_AXIS" "${EXTRA[@]}")
if [[ "$DRY_RUN" == 1 ]]; then
  printf '%q ' "${cmd[@]}"; printf '\n'
else
  exec "${cmd[@]}"
fi
