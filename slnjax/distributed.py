"""Multi-process runs: detect the environment, then (and only then) jax.distributed.initialize.

A run is multi-process when one of these says so (checked in this order):

  explicit   JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES=N (> 1), JAX_PROCESS_ID=i
             (what launch/local.sh sets; any launcher can set them)
  slurm      SLURM_NTASKS > 1 with SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_PROCID,
             SLURM_LOCALID (srun; JAX derives the coordinator from the node list)
  tpu pod    a Cloud TPU VM whose slice has more than one worker (TPU_WORKER_HOSTNAMES /
             TPU_PROCESS_ADDRESSES on GKE, else the VM metadata's worker-network-endpoints),
             or a multislice job (MEGASCALE_NUM_SLICES > 1)

Otherwise nothing is initialized: a single process sees its local devices and needs no
coordinator. ``initialize`` is idempotent. On CPU-only multi-process runs the CPU collectives
use gloo. Only process 0 should log (``is_primary``); every process must take part in
checkpointing (orbax coordinates the writes) and reads only its share of the data.
"""
from __future__ import annotations

import glob
import os
import urllib.request
from typing import NamedTuple

import jax

_METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/attributes/"


class Environment(NamedTuple):
  kind: str  # "single" | "explicit" | "slurm" | "tpu"
  num_processes: int | None  # None: JAX finds out (TPU metadata)
  process_id: int | None
  coordinator: str | None  # host:port (None: JAX finds out)


def _int(name: str, env) -> int:
  try:
    return int(env[name])
  except ValueError as e:
    raise ValueError(f"Environment variable {name}={env[name]!r} must be an integer.") from e


def _tpu_workers(env, timeout_s: float = 2.0) -> int:
  """Workers in this TPU slice (1 when this is not a Cloud TPU VM)."""
  hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES")
  if hosts and " " not in hosts:
    return len([h for h in hosts.split(",") if h])
  if not (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
    return 1
  req = urllib.request.Request(_METADATA + "worker-network-endpoints",
                               headers={"Metadata-Flavor": "Google"})
  try:
    with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 (fixed GCE URL)
      return max(1, len([w for w in r.read().decode().split(",") if w]))
  except OSError:
    return 1


def detect(env=None) -> Environment:
  """The multi-process environment this process runs in (see the module docstring)."""
  env = os.environ if env is None else env
  explicit = [k for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
              if k in env]
  if explicit:
    if len(explicit) < 3:
      raise ValueError(f"Only {explicit} are set: an explicit multi-process run needs all of "
                       "JAX_COORDINATOR_ADDRESS (host:port), JAX_NUM_PROCESSES and "
                       "JAX_PROCESS_ID.")
    n, i = _int("JAX_NUM_PROCESSES", env), _int("JAX_PROCESS_ID", env)
    if not 0 <= i < n:
      raise ValueError(f"JAX_PROCESS_ID={i} must be in [0, JAX_NUM_PROCESSES={n}).")
    if n > 1:
      return Environment("explicit", n, i, env["JAX_COORDINATOR_ADDRESS"])
    return Environment("single", 1, 0, None)
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
  if all(k in env for k in slurm) and _int("SLURM_NTASKS", env) > 1:
    return Environment("slurm", _int("SLURM_NTASKS", env), _int("SLURM_PROCID", env), None)
  if int(env.get("MEGASCALE_NUM_SLICES", "1") or 1) > 1 or _tpu_workers(env) > 1:
    return Environment("tpu", None, None, None)
  return Environment("single", 1, 0, None)


def initialize(env=None) -> Environment:
  """Calls jax.distributed.initialize when ``detect`` finds a multi-process environment.

  Must run before anything touches the devices (jax.devices(), jit). Safe to call twice."""
  found = detect(env)
  if found.kind == "single" or jax.distributed.is_initialized():
    return found
  if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if found.kind == "explicit":
    jax.distributed.initialize(found.coordinator, num_processes=found.num_processes,
                               process_id=found.process_id)
  else:  # slurm, tpu: JAX's own cluster detection fills in the rest
    jax.distributed.initialize()
  return found


def is_primary() -> bool:
  """True on the process that writes logs and summaries (process 0)."""
  return jax.process_index() == 0


def describe() -> str:
  return (f"process {jax.process_index()}/{jax.process_count()}, "
          f"{jax.local_device_count()} local / {jax.device_count()} devices "
          f"({jax.devices()[0].platform})")
