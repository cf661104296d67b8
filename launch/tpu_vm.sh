#!/usr/bin/env bash
# Train on a Cloud TPU VM slice (single host or pod): create it if missing, copy this
# repository to every worker, install idempotently, run python -m slnjax.main on all workers.
#
#   launch/tpu_vm.sh --name NAME --zone ZONE --type v5p-128 [--project P] \
#       [--version tpu-ubuntu2204-base] [--spot] [--no_create] [--dry_run] -- \
#       --config=experiments/FILE.py[:arg] --workdir=gs://BUCKET/RUN [--config.key=value ...]
#
# Everything after -- reaches slnjax.main unchanged (quoted once by launch/plan.py). Every
# worker runs the same command; slnjax.distributed finds the pod and initializes JAX.
# --dry_run prints the exact commands instead of running them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
name=""
zone=""
type=""
project=""
version="tpu-ubuntu2204-base"
spot=0
create=1
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
    --no_create) create=0; shift ;;
    --dry_run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "tpu_vm.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "$name" || -z "$zone" ]]; then
  echo "tpu_vm.sh: --name and --zone are required (see --help)" >&2
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
gc=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
if [[ -n "$project" ]]; then
  where+=(--project="$project")
fi

if [[ "$create" == 1 ]]; then
  if [[ "$dry" == 1 ]] || ! "${gc[@]}" describe "$name" "${where[@]}" >/dev/null 2>&1; then
    if [[ -z "$type" ]]; then
      echo "tpu_vm.sh: $name does not exist; give --type (e.g. v5p-128) to create it" >&2
      exit 2
    fi
    opts=(--accelerator-type="$type" --version="$version")
    if [[ "$spot" == 1 ]]; then
      opts+=(--spot)
    fi
    if [[ "$dry" == 1 ]]; then
      echo "# if '${gc[*]} describe $name' fails:"
    fi
    run "${gc[@]}" create "$name" "${where[@]}" "${opts[@]}"
  fi
fi

archive="$(mktemp -d)/slnjax.tgz"
list="$archive.files"
if [[ "$dry" == 1 ]]; then
  echo "git -C $(printf '%q' "$root") ls-files -co --exclude-standard > $(printf '%q' "$list")"
else
  git -C "$root" ls-files -co --exclude-standard > "$list"
fi
run tar -czf "$archive" -C "$root" -T "$list"
run "${gc[@]}" scp "$archive" "$name:~/slnjax.tgz" "${where[@]}" --worker=all
run "${gc[@]}" ssh "$name" "${where[@]}" --worker=all \
  --command="$(python3 "$here/plan.py" install --extra tpu)"
rc=0
run "${gc[@]}" ssh "$name" "${where[@]}" --worker=all \
  --command="$(python3 "$here/plan.py" run --root "$root" -- "$@")" || rc=$?
if [[ "$rc" == 75 ]]; then  # slnjax.checkpoint.PREEMPTED_EXIT_CODE
  echo "tpu_vm.sh: the run was stopped and saved a checkpoint; rerun this command to resume" >&2
elif [[ "$rc" != 0 ]]; then
  echo "tpu_vm.sh: the run failed (status $rc); a preempted spot VM must be deleted and" \
       "recreated (gcloud compute tpus tpu-vm delete $name); rerunning resumes from the" \
       "newest checkpoint in the workdir" >&2
fi
exit "$rc"
