"""The sharded train step compiles without XLA's "Involuntary full rematerialization": the
embedding lookup (and its transpose) and the LM head keep their shardings instead of XLA
replicating a tensor and re-partitioning it (slnjax/lobes/transformer.py, Lobe.embed_ids).

The compiles run in a subprocess on 8 simulated CPU devices; XLA's SPMD partitioner writes
the warning from C++ to stderr, which the test reads. Default: one tiny config on the
(2, 2, 2), (1, 4, 2) and (4, 2, 1) meshes; @slow: the tall (bptt, soft tokens) and
lateralized smoke configs on every tested mesh and the hemispheres layout."""
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARNING = "Involuntary full rematerialization"
MESHES = ["2x2x2", "1x4x2", "4x2x1", "8x1x1"]  # the smoke lobes have 2 kv heads: tensor <= 2
TINY = dict(n_layers=1, n_heads=4, n_kv_heads=2, d_model=16, d_ff=32, vocab_size=260)


def _config(name: str, ici: tuple):
  from experiments import common  # pylint: disable=import-outside-toplevel
  if name == "single":  # one lobe, teacher forcing: the cheapest step with a lookup and a head
    return common.experiment("single", "sft", smoke=True, batch_size=8,
                          model=dict(left=dict(TINY)), mesh=dict(ici=ici))
  path = os.path.join(ROOT, "experiments", f"{name}.py")
  ns = {}
  with open(path, encoding="utf-8") as f:
    exec(compile(f.read(), path, "exec"), ns)  # pylint: disable=exec-used
  c = ns["get_config"]("smoke")
  with c.unlocked():
    c.mesh.ici, c.batch_size = ici, 8  # a multiple of every mesh's batch ways
  return c


def worker(cases):
  """cases: "config@mesh" with config "single" or an experiments/ name, mesh "2x2x2" or
  "hemispheres" (the (2, 2, 2) mesh, hemispheres layout). Prints "CASE name" to stderr
  before each compile, so that the parent can attribute XLA's warnings."""
  import jax  # pylint: disable=import-outside-toplevel
  from slnjax import finalize, parallel, train  # pylint: disable=import-outside-toplevel
  assert jax.device_count() == 8, jax.devices()
  for case in cases:
    name, shape = case.split("@")
    hemi = shape == "hemispheres"
    ici = (2, 2, 2) if hemi else tuple(int(x) for x in shape.split("x"))
    ts = train.make_train_step(finalize.finalize(_config(name, ici)), parallel.make_mesh(ici))
    if hemi:
      ts = parallel.hemispheres_step(ts)
    args = (ts.abstract_state, ts.abstract_batch) + (
        (ts.abstract_rollout,) if ts.rollout_fn is not None else ())
    print(f"CASE {case}", file=sys.stderr, flush=True)
    ts.step_fn.trace(*args).lower().compile()
  print("CASE end", file=sys.stderr, flush=True)
  print("RESULT " + json.dumps(cases), flush=True)


def involuntary_remats(cases, timeout=600) -> dict:
  """{case: [the op names XLA warned about]} from compiling the cases in a subprocess."""
  env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
         + " --xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
  cmd = ["timeout", "-s", "KILL", str(timeout), sys.executable, os.path.abspath(__file__),
         *cases]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  assert proc.returncode == 0 and "RESULT " in proc.stdout, (proc.stdout + proc.stderr)[-4000:]
  out, case = {}, None
  for line in proc.stderr.splitlines():
    if line.startswith("CASE "):
      case = line[5:]
      out.setdefault(case, [])
    elif WARNING in line:
      op = re.search(r'op_name="([^"]*)"', line)
      out.setdefault(case, []).append(op.group(1) if op else line[:300])
  out.pop("end", None)
  return out


def _check(cases, timeout):
  got = involuntary_remats(cases, timeout)
  assert sorted(got) == sorted(cases), got
  bad = {c: ops for c, ops in got.items() if ops}
  assert not bad, f"XLA replicated and re-partitioned tensors: {json.dumps(bad, indent=1)}"


def test_sharded_step_has_no_involuntary_rematerialization():
  """One tiny single-lobe config on the three meshes where XLA warned before the change:
  (2, 2, 2) (data, fsdp and tensor all used), (1, 4, 2) and (4, 2, 1)."""
  _check(["single@2x2x2", "single@1x4x2", "single@4x2x1"], 400)


@pytest.mark.slow
def test_no_involuntary_rematerialization_on_any_mesh():
  cases = [f"{n}@{m}" for n in ("llama8b_tall", "ablation_f_lateralized") for m in MESHES]
  _check(cases + ["llama8b_tall@hemispheres"], 2400)


if __name__ == "__main__":
  worker(sys.argv[1:])
