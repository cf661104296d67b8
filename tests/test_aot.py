"""AOT fit check: the topology table, FLOP counting, and compiles for a TPU topology on this
CPU machine (needs libtpu, the `tpu` extra; skipped cleanly without it)."""
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from slnjax import aot, topologies

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(not HAS_LIBTPU,
                                  reason="libtpu not installed (pip install 'jax[tpu]==0.10.2')")


@pytest.mark.parametrize("name,topology,devices,slices", [
    ("v5p-128", "v5p:4x4x4", 64, 1),
    ("v5e-256", "v5e:16x16", 256, 1),
    ("v5litepod-16", "v5e:4x4", 16, 1),
    ("v4-8", "v4:2x2x1", 4, 1),
    ("v6e-64", "v6e:8x8", 64, 1),
    ("2xv5e-256", "v5e:16x16", 512, 2),
    ("v5e:2x2", "v5e:2x2", 4, 1),
])
def test_topology_names(name, topology, devices, slices):
  t = topologies.parse(name)
  assert (t.topology_name, t.num_devices, t.num_slices) == (topology, devices, slices)


@pytest.mark.parametrize("name,match", [
    ("v5p-127", "multiple of 2"), ("v5p-96", "not in the table"), ("v9-8", "Unknown TPU"),
    ("v5e:4x4x4", "2 dimensions"), ("tpu", "Cannot read")])
def test_bad_topology_names_say_what_is_valid(name, match):
  with pytest.raises(ValueError, match=match):
    topologies.parse(name)


def test_jaxpr_flops_multiplies_scan_bodies():
  def f(x_NK, w_KK):
    y, _ = jax.lax.scan(lambda c, _: (c @ w_KK, None), x_NK, None, length=5)
    return jax.lax.cond(y.sum() > 0, lambda: y @ w_KK, lambda: y)
  jaxpr = jax.make_jaxpr(f)(jnp.ones((3, 4)), jnp.ones((4, 4)))
  assert aot.jaxpr_flops(jaxpr) == (2 * 3 * 4 * 4 * 6, 0)


def _aot(*args, timeout=400):
  env = {**os.environ, "ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": ROOT}
  cmd = ["timeout", "-s", "KILL", str(timeout), sys.executable, "-m", "slnjax.aot", *args]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


@needs_libtpu
def test_tiny_config_compiles_for_v5e_2x2(tmp_path):
  out = tmp_path / "fit.json"
  p = _aot("--config=experiments/llama8b_tall.py:smoke", "--topology=v5e:2x2",
           "--step_time=0.01", f"--json={out}")
  assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
  assert "fit: YES" in p.stdout and "MFU" in p.stdout
  res = json.loads(out.read_text())
  step = res["programs"]["step"]
  assert res["devices"] == 4 and res["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  assert step["memory"]["argument"] > 0 and step["memory"]["peak"] < res["hbm_bytes"]
  assert step["flops"] > step["xla_flops_per_device"] > 0
  assert 0 < res["mfu"] < 1


OVERSIZED = """
from experiments import common


def get_config(arg=None):
  big = dict(vocab_size=1000000, d_model=4096, n_heads=32, n_kv_heads=8, n_layers=1)
  return common.experiment("single", "sft", smoke=True, model=dict(left=big))
"""


@needs_libtpu
def test_oversized_config_reports_hbm_overflow_not_a_traceback(tmp_path):
  path = tmp_path / "oversized.py"
  path.write_text(OVERSIZED)  # 4.1 B parameters + AdamW in float32 on 4 v5e chips
  p = _aot(f"--config={path}", "--topology=v5e:2x2")
  assert p.returncode == 3, (p.stdout + p.stderr)[-3000:]
  assert "DOES NOT FIT" in p.stdout and "exceeds available HBM" in p.stdout
  assert "Traceback" not in p.stdout + p.stderr


def test_missing_libtpu_is_one_error_line_whatever_jax_says(monkeypatch):
  """Decided on the condition (libtpu importable? topology call failed?), not on wording."""
  topo = topologies.parse("v5e:2x2")
  monkeypatch.setattr(aot.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(aot.TpuUnavailable, match="libtpu is not installed"):
    aot._devices(topo)
  monkeypatch.undo()
  monkeypatch.setattr(aot.importlib.util, "find_spec", lambda name: object())

  def fail():
    raise RuntimeError("some wording no jax version has used yet\nsecond line")
  monkeypatch.setattr(topologies.Topology, "devices", lambda self: fail())
  with pytest.raises(aot.TpuUnavailable, match="some wording no jax version") as e:
    aot._devices(topo)
  assert "second line" not in str(e.value)


@pytest.mark.skipif(HAS_LIBTPU, reason="checks the message a machine without libtpu prints")
def test_aot_without_libtpu_prints_one_error_line():
  p = _aot("--config", "experiments/ablation_f_lateralized.py:smoke", "--topology", "v5e-16",
           timeout=200)
  assert p.returncode == 2, p.stderr
  assert p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr
  assert p.stderr.startswith("error: libtpu is not installed") and "pip install" in p.stderr
