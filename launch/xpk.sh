#!/usr/bin/env bash
# Train on a GKE TPU cluster with xpk: one workload whose image is a JAX base image plus
# this repository (xpk --script-dir), installed and run on every TPU host of every slice.
#
#   launch/xpk.sh --cluster CLUSTER --workload NAME --type v5p-128 [--slices 1] \
#       [--project P] [--zone Z] [--image IMAGE] [--max_restarts N] [--grace_s S] \
#       [--dry_run] -- \
#       --config=experiments/FILE.py[:arg] --workdir=gs://BUCKET/RUN [--config.key=value ...]
#
# The cluster must exist (xpk cluster create ...). Multislice runs (--slices > 1) get
# MEGASCALE_* variables from xpk; slnjax.distributed detects them. Preemption: a run that
# gets SIGTERM saves a checkpoint and exits 75; --max_restarts N lets the JobSet restart the
# workload up to N times on such an exit (xpk's --max-restarts with
# --restart-on-user-code-failure), and the restart resumes from the checkpoint; --grace_s
# gives the pods S seconds between SIGTERM and SIGKILL to save (xpk's default is 30).
# --dry_run prints the exact command.
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
max_restarts=0
grace=""
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
    --max_restarts) max_restarts="$2"; shift 2 ;;
    --grace_s) grace="$2"; shift 2 ;;
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
if [[ "$max_restarts" != 0 ]]; then
  cmd+=(--max-restarts="$max_restarts" --restart-on-user-code-failure)
fi
if [[ -n "$grace" ]]; then
  cmd+=(--termination-grace-period-seconds="$grace")
fi
if [[ "$dry" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  printf '\n'
else
  "${cmd[@]}"
fi
