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
  rf = res["roofline"]  # from 1- and 2-layer compiles, extrapolated to the smoke's 2 layers
  assert rf["n_layers"] == 2 and rf["flops"] > 0 and rf["hbm_bytes"] > 0
  assert rf["collectives"]["all-gather"] > 0  # FSDP over 4 chips gathers the weights
  assert set(rf["chips"]) == {"v4", "v5e", "v5p", "v6e"}
  assert all(0 < c["mfu_bound"] <= 1.5 for c in rf["chips"].values())
  assert "roofline" in p.stdout and "MFU at bound" in p.stdout


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


HLO = """
ENTRY %main (p: bf16[8,16]) -> f32[4] {
  %all-gather.1 = bf16[64,16]{1,0:T(8,128)(2,1)} all-gather(%p), dimensions={0}
  %all-gather-start.2 = (bf16[8,16]{1,0}, bf16[64,16]{1,0}) all-gather-start(%p), dimensions={0}
  %all-gather-done.2 = bf16[64,16]{1,0} all-gather-done(%all-gather-start.2)
  %all-reduce.3 = (f32[32,2]{1,0}, f32[4]{0}) all-reduce(%x, %y), to_apply=%add
  ROOT %fusion.4 = f32[4]{0} fusion(%all-reduce.3), kind=kLoop, calls=%fused
}
"""


def test_collective_bytes_count_each_collective_once_by_its_result():
  from slnjax import roofline  # pylint: disable=import-outside-toplevel
  got = roofline.collective_bytes(HLO)
  assert got["all-gather"] == 2 * (64 * 16 * 2) and got["all-reduce"] == (64 + 4) * 4
  assert got["reduce-scatter"] == got["all-to-all"] == got["collective-permute"] == 0


def test_roofline_bound_and_mfu_per_generation():
  from slnjax import roofline  # pylint: disable=import-outside-toplevel
  v5p = topologies.CHIPS["v5p"]
  ridge = v5p.peak_flops / v5p.hbm_bandwidth  # ~166 FLOP/byte
  rf = roofline.roofline(1e12, 1e12 / (2 * ridge), 0.5e12, {"v5p": v5p})["v5p"]
  assert rf["bound"] == "compute" and rf["mfu_bound"] == pytest.approx(0.5)
  rf = roofline.roofline(1e12, 1e12 / (ridge / 4), 1e12, {"v5p": v5p})["v5p"]
  assert rf["bound"] == "HBM" and rf["mfu_bound"] == pytest.approx(0.25)
  assert set(roofline.roofline(1.0, 1.0, 1.0)) == {"v4", "v5e", "v5p", "v6e"}
  assert all(c.hbm_bandwidth > 0 for c in topologies.CHIPS.values())


def test_layer_extrapolation_matches_a_real_compile():
  """On this CPU (no libtpu): the 3-layer costs extrapolated from 1- and 2-layer compiles
  equal the unrolled 3-layer compile's, and the FLOPs agree with the jaxpr count."""
  from experiments import common  # pylint: disable=import-outside-toplevel
  from slnjax import finalize, parallel  # pylint: disable=import-outside-toplevel
  lobe = dict(n_layers=3, n_heads=2, n_kv_heads=1, d_model=16, d_ff=32, vocab_size=64)
  c = common.experiment("single", "sft", smoke=True, batch_size=2, prompt_len=4,
                     model=dict(left=lobe, loop=dict(turn_len=2, max_turns=1)))
  mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  c = finalize.finalize(c)
  got = aot.layer_costs(c, mesh)
  assert got["n_layers"] == 3
  _, progs = aot._programs(aot._cut(c, 3), mesh, "shared")
  (_, fn, args), = progs
  traced = fn.trace(*args)
  ca = traced.lower().compile().cost_analysis()
  assert got["flops"] == pytest.approx(ca["flops"], rel=0.02)
  assert got["hbm_bytes"] == pytest.approx(ca["bytes accessed"], rel=0.05)
  # XLA also counts elementwise FLOPs; the jaxpr count only matmuls
  assert 0.5 < aot.jaxpr_flops(traced.jaxpr)[0] / got["flops"] <= 1.0
