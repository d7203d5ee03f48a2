#!/usr/bin/env bash
# The figures of docs/performance.md on one accelerator (a GPU or a TPU chip), written to docs/bench/.
#
#   launch/bench_device.sh [--dry-run] [--config FILE] [--name NAME] [-- ARGS]
#
# Two commands, one after the other (HNT_DATA_DIR must hold the dataset):
#   1. compile, step, epoch and full-ranking evaluation times and peak memory of HNT, pair_ranker and
#      LightGCN-G, with the propagation table -> docs/bench/NAME.json
#   2. one whole training run each of HNT and LightGCN-G as the command line trains them (learning rate
#      0.01, the grid's choice for both on Taobao): seconds from the start to the best validation
#      checkpoint, that epoch and its test metrics -> docs/bench/NAME_time_to_best.json
# NAME defaults to the config's name and the first device's kind (e.g. taobao_nvidia_h100). ARGS are passed
# to both (e.g. --config.train.propagation_dtype=bfloat16).
set -euo pipefail

DRY_RUN=0 CONFIG="configs/taobao.py" NAME=""
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --config) CONFIG="$2"; shift ;;
    --name) NAME="$2"; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "error: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$NAME" ]]; then
  if [[ "$DRY_RUN" == 1 ]]; then
    device="DEVICE"
  else
    device=$(python -c "import jax; print(jax.devices()[0].device_kind.lower().replace(' ', '_'))")
  fi
  NAME="$(basename "$CONFIG" .py)_${device}"
fi

steps=(python -m hnt_jax.bench --config "$CONFIG" --models hnt,pair_ranker,lightgcn_g --repeats 5 --epochs 3
       --out "docs/bench/${NAME}.json" "${EXTRA[@]}")
to_best=(python -m hnt_jax.bench --config "$CONFIG" --models hnt,lightgcn_g --repeats 1 --epochs 1
         --nopropagation --time_to_best --config.train.learning_rate=0.01 --config.train.progress=False
         --out "docs/bench/${NAME}_time_to_best.json" "${EXTRA[@]}")
if [[ "$DRY_RUN" == 1 ]]; then
  printf '%q ' "${steps[@]}"; printf '\n'
  printf '%q ' "${to_best[@]}"; printf '\n'
else
  "${steps[@]}"
  "${to_best[@]}"
fi
