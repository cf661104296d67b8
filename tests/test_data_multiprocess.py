"""Two real JAX processes (CPU, gloo): each reads only its shard (ShardByJaxProcess), and the
global batches assembled by `global_batch` cover the split exactly once."""
import json
import os
import socket
import subprocess
import sys

import pytest

from slnjax.data import ensure_built, resolve_config

CFG = dict(name="mp", num_train=21, num_test=4)


def worker(process_id: int, port: int, data_dir: str) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  from slnjax.data import (  # pylint: disable=import-outside-toplevel
      global_batch, load_source, make_dataset)

  source = load_source("parity", "train", data_dir, resolve_config("parity", None, **CFG))
  ds = make_dataset(source, batch_size=4, prompt_len=80, target_len=4, shuffle=False,
                    num_epochs=1, pad_final_batch=True)
  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(-1, 1), ("data", "fsdp"))
  local, covered, shapes = [], [], set()
  for batch in ds:
    local.extend(batch["index"][batch["valid"] == 1].tolist())
    arrays = global_batch(batch, mesh)
    shapes.add(arrays["ids"].shape)
    index = np.asarray(multihost_utils.process_allgather(arrays["index"], tiled=True))
    valid = np.asarray(multihost_utils.process_allgather(arrays["valid"], tiled=True))
    covered.extend(index[valid == 1].tolist())
  print("RESULT " + json.dumps({"local": local, "covered": covered,
                                "shapes": [list(s) for s in shapes]}), flush=True)


@pytest.mark.slow
def test_two_jax_processes_read_disjoint_shards(tmp_path):
  ensure_built("parity", str(tmp_path), resolve_config("parity", None, **CFG))
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PJRT_NPROC": "16",
         "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
  env.pop("XLA_FLAGS", None)  # one CPU device per process
  procs = [subprocess.Popen([sys.executable, __file__, str(i), str(port), str(tmp_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  results = []
  for proc in procs:
    try:
      out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      pytest.fail("multi-process workers timed out")
    assert proc.returncode == 0, out[-3000:]
    results.append(json.loads(out.split("RESULT ", 1)[1]))
  local = [r["local"] for r in results]
  assert not set(local[0]) & set(local[1])
  assert sorted(local[0] + local[1]) == list(range(21))
  for r in results:
    assert sorted(r["covered"]) == list(range(21))
    assert r["shapes"] == [[8, 84]]  # per-process batch 4 x 2 processes


if __name__ == "__main__":
  worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
