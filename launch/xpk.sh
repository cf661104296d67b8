#!/usr/bin/env bash
# Train on a GKE TPU cluster with xpk: one workload whose image is a JAX base image plus
# this repository (xpk --script-dir), installed and run on every TPU host of every slice.
#
#   launch/xpk.sh --cluster CLUSTER --workload NAME --type v5p-128 [--slices 1] \
#       [--project P] [--zone Z] [--image IMAGE] [--dry_run] -- \
#       --config=experiments/FILE.py[:arg] --workdir=gs://BUCKET/RUN [--config.key=value ...]
#
# The cluster must exist (xpk cluster create ...). Multislice runs (--slices > 1) get
# MEGASCALE_* variables from xpk; slnjax.distributed detects them. --dry_run prints the
# exact command.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cluster=""
workload=""
type=""
slices=1
project=""
zone=""
image="us-docker.pkg.dev/cloud-tpu-images/jax-stable-stack/tpu:latest"
dry=0

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 && !/^#SBATCH/ {sub(/^# ?/, ""); if ($0 != "" || n) {print; n = 1}}' "${BASH_SOURCE[0]}"; }

while (($#)); do
  case "$1" in
    --cluster) cluster="$2"; shift 2 ;;
    --workload) workload="$2"; shift 2 ;;
    --type) type="$2"; shift 2 ;;
    --slices) slices="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --image) image="$2"; shift 2 ;;
    --dry_run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "xpk.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "$cluster" || -z "$workload" || -z "$type" ]]; then
  echo "xpk.sh: --cluster, --workload and --type are required (see --help)" >&2
  exit 2
fi

python3 "$here/plan.py" check --root "$root" -- "$@"
cmd=(xpk workload create --cluster="$cluster" --workload="$workload" --tpu-type="$type"
     --num-slices="$slices" --base-docker-image="$image" --script-dir="$root"
     --command="$(python3 "$here/plan.py" container --extra tpu -- "$@")")
if [[ -n "$project" ]]; then
  cmd+=(--project="$project")
fi
if [[ -n "$zone" ]]; then
  cmd+=(--zone="$zone")
fi
if [[ "$dry" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  printf '\n'
else
  "${cmd[@]}"
fi
