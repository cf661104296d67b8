#!/usr/bin/env bash
# N JAX processes on this machine, joined through a coordinator on 127.0.0.1, each with D
# CPU devices: the multi-host code path (jax.distributed, per-process data, process-0 logs,
# all-process checkpoints) without a cluster.
#
#   launch/local.sh [-n 2] [-d 4] [--port P] [--logdir DIR] [--dry_run] -- \
#       --config=experiments/FILE.py[:arg] --workdir=DIR [--config.key=value ...]
#
# Everything after -- goes to python -m slnjax.main unchanged. If one process fails, the
# others are killed and its exit code is returned. Ctrl-C or SIGTERM is passed on to every
# process, which saves a checkpoint and exits 75 (as does a process preempted on its own:
# the others are then stopped the same way); the script then exits 75, and the same command
# resumes. PYTHON overrides the interpreter.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-$root/.venv/bin/python}"
num=2
devices=4
port=""
logdir=""
dry=0

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 && !/^#SBATCH/ {sub(/^# ?/, ""); if ($0 != "" || n) {print; n = 1}}' "${BASH_SOURCE[0]}"; }

while (($#)); do
  case "$1" in
    -n|--num_processes) num="$2"; shift 2 ;;
    -d|--devices) devices="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --logdir) logdir="$2"; shift 2 ;;
    --dry_run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "local.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

cd "$root"
"$python" "$here/plan.py" check -- "$@"
if [[ -z "$port" ]]; then
  port="$("$python" "$here/plan.py" port)"
fi
if [[ -n "$logdir" && "$dry" == 0 ]]; then
  mkdir -p "$logdir"
fi

if [[ "$dry" == 1 ]]; then
  printf 'cd %q\n' "$root"
fi
pids=()
preempted=75  # slnjax.checkpoint.PREEMPTED_EXIT_CODE
stopping=0
interrupted=0
cleanup() {
  if ((${#pids[@]})); then
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
}
stop_all() {  # every process saves a checkpoint, then exits 75
  if ((stopping == 0)); then
    echo "local.sh: stopping; every process saves a checkpoint first" >&2
  fi
  stopping=1
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
  fi
}
trap 'interrupted=1; stop_all' INT TERM

for ((i = 0; i < num; i++)); do
  cmd=(env "PYTHONPATH=$root" "JAX_COORDINATOR_ADDRESS=127.0.0.1:$port"
       "JAX_NUM_PROCESSES=$num" "JAX_PROCESS_ID=$i" "JAX_PLATFORMS=cpu" "PJRT_NPROC=16"
       "XLA_FLAGS=--xla_force_host_platform_device_count=$devices"
       "$python" -m slnjax.main "$@")
  if [[ "$dry" == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    if [[ -n "$logdir" ]]; then printf '> %q 2>&1 ' "$logdir/process_$i.log"; fi
    printf '&\n'
    continue
  fi
  if [[ -n "$logdir" ]]; then
    "${cmd[@]}" > "$logdir/process_$i.log" 2>&1 &
  else
    "${cmd[@]}" &
  fi
  pids+=("$!")
done
if [[ "$dry" == 1 ]]; then
  echo "wait"
  exit 0
fi

rc=0
remaining=$num
while ((remaining > 0)); do
  status=0
  wait -n || status=$?
  if ((interrupted == 1)); then  # the signal ended the wait, not a process
    interrupted=0
    continue
  fi
  remaining=$((remaining - 1))
  if ((status == preempted)); then
    rc=$preempted
    stop_all
  elif ((status != 0)); then
    if ((stopping == 1)); then
      if ((rc == 0 || rc == preempted)); then rc=$status; fi
      continue
    fi
    echo "local.sh: a process exited with status $status; stopping the others." >&2
    cleanup
    wait || true
    exit "$status"
  fi
done
if ((stopping == 1)); then
  if ((rc == preempted)); then
    echo "local.sh: every process saved its checkpoint; run the same command to resume" >&2
  fi
fi
exit "$rc"
