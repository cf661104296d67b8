#!/usr/bin/env bash
# Train on TPUs obtained through a queued resource (the way to get large or spot v5p/v5e/v6e
# slices): request it, wait until it is ACTIVE, then copy, install and run on every worker
# with launch/tpu_vm.sh --no_create.
#
#   launch/queued_resource.sh --name NAME --zone ZONE --type v5p-128 [--project P] \
#       [--version tpu-ubuntu2204-base] [--spot] [--poll 60] [--dry_run] -- \
#       --config=experiments/FILE.py[:arg] --workdir=gs://BUCKET/RUN [--config.key=value ...]
#
# The TPU VM gets the same NAME as the queued resource. --dry_run prints the exact commands.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
name=""
zone=""
type=""
project=""
version="tpu-ubuntu2204-base"
spot=0
poll=60
dry=0

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 && !/^#SBATCH/ {sub(/^# ?/, ""); if ($0 != "" || n) {print; n = 1}}' "${BASH_SOURCE[0]}"; }

while (($#)); do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --type) type="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --spot) spot=1; shift ;;
    --poll) poll="$2"; shift 2 ;;
    --dry_run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "queued_resource.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "$name" || -z "$zone" || -z "$type" ]]; then
  echo "queued_resource.sh: --name, --zone and --type are required (see --help)" >&2
  exit 2
fi

run() {
  if [[ "$dry" == 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

python3 "$here/plan.py" check --root "$root" -- "$@"
qr=(gcloud compute tpus queued-resources)
where=(--zone="$zone")
if [[ -n "$project" ]]; then
  where+=(--project="$project")
fi
opts=(--node-id="$name" --accelerator-type="$type" --runtime-version="$version")
if [[ "$spot" == 1 ]]; then
  opts+=(--spot)
fi

run "${qr[@]}" create "$name" "${where[@]}" "${opts[@]}"
state_cmd=("${qr[@]}" describe "$name" "${where[@]}" --format='value(state.state)')
if [[ "$dry" == 1 ]]; then
  echo "# repeat every ${poll}s until it prints ACTIVE (stop on FAILED or SUSPENDED):"
  run "${state_cmd[@]}"
else
  while true; do
    state="$("${state_cmd[@]}")"
    echo "queued resource $name: $state"
    case "$state" in
      ACTIVE) break ;;
      FAILED|SUSPENDED) echo "queued_resource.sh: $name is $state" >&2; exit 1 ;;
    esac
    sleep "$poll"
  done
fi

extra=()
if [[ -n "$project" ]]; then
  extra+=(--project "$project")
fi
if [[ "$dry" == 1 ]]; then
  extra+=(--dry_run)
fi
"$here/tpu_vm.sh" --name "$name" --zone "$zone" --no_create "${extra[@]}" -- "$@"
