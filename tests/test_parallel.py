"""Sharded = unsharded: losses and gradients of the soft-token loop (loop.unroll through
sln.unroll) on 8 simulated CPU devices, for meshes (data, fsdp, tensor) = (8,1,1), (2,2,2),
(1,2,4) and the hemispheres layout, against one device; tall and lateralized SLNs.

The sharded runs happen in a subprocess (8 host devices, PJRT_NPROC=16, SIGKILL timeout)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHES = [(8, 1, 1), (2, 2, 2), (1, 2, 4)]
RTOL = 1e-5  # float32: |sharded - single| <= RTOL * max|single| per leaf; measured <= 5e-7


def _model(kind):
  from slnjax import lobes, sln  # pylint: disable=import-outside-toplevel
  from slnjax.loop import LoopConfig  # pylint: disable=import-outside-toplevel
  lobe = lobes.tiny(n_heads=8, n_kv_heads=4, d_model=32, d_ff=64)
  loop = LoopConfig(turn_len=3, max_turns=2, mode="soft", threshold=0.5)
  return sln.build(kind, lobe, lobe, loop)


def _loss(model, params, batch, rng):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from slnjax import sln  # pylint: disable=import-outside-toplevel
  d = sln.unroll(model, params, batch["prompt_ids"], batch["prompt_len"], rng, tau=0.5,
                 target_BM=batch["target_ids"])
  act = d.active_NB.astype(jnp.float32)
  nll = -jnp.sum(d.left_logp_target_NBM * act[..., None]) / jnp.sum(act)
  bce = jnp.sum(jax.nn.softplus(-d.score_logit_NB) * act) / jnp.sum(act)
  return nll + bce + 0.1 * jnp.mean(d.left_emb_NBMR ** 2)


def worker(cases):
  """cases: "kind:2x2x2" or "kind:hemispheres" (on the 2x2x2 mesh)."""
  import jax  # pylint: disable=import-outside-toplevel
  from slnjax import parallel, sln  # pylint: disable=import-outside-toplevel
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  B, P, M = 8, 6, 3
  batch = {"prompt_ids": rng.integers(4, 260, (B, P)).astype(np.int32),
           "prompt_len": rng.integers(3, P + 1, (B,)).astype(np.int32),
           "target_ids": rng.integers(4, 260, (B, M)).astype(np.int32)}
  key = jax.random.key(1)
  out, refs = {}, {}
  for case in cases:
    kind, shape = case.split(":")
    model = _model(kind)
    params = sln.init(model, jax.random.key(0))
    vg = lambda p, b, model=model: jax.value_and_grad(lambda q: _loss(model, q, b, key))(p)
    if kind not in refs:
      ref_l, ref_g = jax.jit(vg)(params, batch)
      refs[kind] = float(ref_l), [np.asarray(x) for x in jax.tree.leaves(ref_g)]
    ref_l, ref = refs[kind]
    hemi = shape == "hemispheres"
    mesh = parallel.make_mesh((2, 2, 2) if hemi else tuple(int(x) for x in shape.split("x")))
    rules = parallel.DEFAULT_RULES
    p_s = parallel.param_shardings(model, mesh, rules)
    b_s = parallel.named_by_suffix(batch, mesh, rules)
    with parallel.activation_rules(mesh, rules):
      if hemi:
        h_s = parallel.hemisphere_shardings(params, p_s, mesh)
        hp = jax.device_put(parallel.to_hemispheres(params), h_s)
        assert hp.both[0].sharding.spec[0] == parallel.HEMI_AXIS
        f = jax.jit(lambda hp, b, vg=vg: vg(parallel.from_hemispheres(hp), b),
                    in_shardings=(h_s, b_s), out_shardings=(None, p_s))
        loss, grads = f(hp, jax.device_put(batch, b_s))
      else:
        f = jax.jit(vg, in_shardings=(p_s, b_s), out_shardings=(None, p_s))
        loss, grads = f(jax.device_put(params, p_s), jax.device_put(batch, b_s))
    err = max(float(np.max(np.abs(np.asarray(g) - r)) / (np.max(np.abs(r)) + 1e-30))
              for g, r in zip(jax.tree.leaves(grads), ref))
    out[case] = {"loss": abs(float(loss) - ref_l) / abs(ref_l), "grad": err}
  print("RESULT " + json.dumps(out), flush=True)


def run_worker(cases, timeout=400):
  env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
         + " --xla_force_host_platform_device_count=8",
         "PJRT_NPROC": "16", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
  cmd = ["timeout", "-s", "KILL", str(timeout), sys.executable, os.path.abspath(__file__),
         *cases]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  return json.loads(proc.stdout.split("RESULT ", 1)[1])


def _check(cases, timeout):
  res = run_worker(cases, timeout)
  assert sorted(res) == sorted(cases), res
  for name, err in res.items():
    assert err["loss"] <= RTOL and err["grad"] <= RTOL, (name, err)


def test_sharded_loop_matches_one_device():
  """Default run (2 compiles): the tall SLN, hemispheres layout on the (2,2,2) mesh."""
  _check(["tall:hemispheres"], 600)


@pytest.mark.slow
def test_sharded_loop_matches_one_device_all_meshes():
  cases = [f"{k}:{'x'.join(map(str, m))}" for k in ("tall", "lateralized") for m in MESHES]
  _check(cases + ["lateralized:hemispheres"], 2400)


def test_hemispheres_round_trip_stacks_common_leaves_only():
  import jax  # pylint: disable=import-outside-toplevel
  from slnjax import parallel, sln  # pylint: disable=import-outside-toplevel
  model = _model("lateralized")
  shapes = jax.eval_shape(lambda: sln.init(model, jax.random.key(0)))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)
  state = {"step": np.int32(3), "params": params, "opt": {"left": params["left"]}}
  h = parallel.to_hemispheres(state)
  assert isinstance(h["params"], parallel.Hemispheres) and h["opt"] == state["opt"]
  both, left, right = h["params"].both, h["params"].left, h["params"].right
  assert all(x.shape[0] == 2 for x in both)
  assert len(left) == 3 and len(right) == 2  # lm_head, score_in_w/b; score_w/b
  back = parallel.from_hemispheres(h)
  jax.tree.map(np.testing.assert_array_equal, back, state)


def test_hemispheres_need_a_data_axis_of_two():
  import jax  # pylint: disable=import-outside-toplevel
  from slnjax import parallel, sln  # pylint: disable=import-outside-toplevel
  model = _model("tall")
  mesh = parallel.make_mesh((1, 1, 1))
  params = jax.eval_shape(lambda: sln.init(model, jax.random.key(0)))
  with pytest.raises(ValueError, match="must have size 2"):
    parallel.hemisphere_shardings(params, parallel.param_shardings(model, mesh), mesh)


def test_shardings_of_optimizer_states_and_transcripts():
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from slnjax import loop, parallel, sln  # pylint: disable=import-outside-toplevel
  model = _model("tall")
  mesh = parallel.make_mesh((1, 1, 1))
  params = jax.eval_shape(lambda: sln.init(model, jax.random.key(0)))
  p_s = parallel.param_shardings(model, mesh)
  opt = jax.eval_shape(optax.adamw(1e-3).init, params["left"])
  o_s = parallel.like_params({"left": opt}, params, p_s, mesh)
  assert o_s["left"][0].mu["layers"]["attn"]["q"].spec == p_s["left"]["layers"]["attn"]["q"].spec
  assert o_s["left"][0].count.spec == P()
  d = loop.Dialogue(*[np.zeros((2, 8, 3)) if f.endswith("M") or f.endswith("R") else
                      np.zeros((2, 8)) if f.endswith("NB") else np.zeros((8,))
                      for f in loop.Dialogue._fields])
  d_s = parallel.named_by_suffix(d, mesh)
  assert d_s.left_ids_NBM.spec == P(None, ("data", "fsdp"), None)
  assert d_s.turns_B.spec == P(("data", "fsdp"))
  b_s = parallel.named_by_suffix({"ids": np.zeros((8, 5))}, mesh)
  assert b_s["ids"].spec == P(("data", "fsdp"), None)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_cache_shardings_follow_the_cache_layout(scan_layers):
  import jax  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from slnjax import lobes, parallel  # pylint: disable=import-outside-toplevel
  cfg = lobes.tiny("llama", scan_layers=scan_layers)
  mesh = parallel.make_mesh((1, 1, 1))
  sh = parallel.cache_shardings(cfg, mesh)
  cache = jax.eval_shape(lambda: lobes.init_cache(cfg, 2, 8))
  assert jax.tree.structure(sh) == jax.tree.structure(cache)
  batch, heads = ("data", "fsdp"), "tensor"
  for s, x in zip(jax.tree.leaves(sh), jax.tree.leaves(cache)):
    assert s.spec == (P(None, batch, heads, None, None) if scan_layers else
                      P(batch, heads, None, None)) and len(s.spec) == x.ndim


if __name__ == "__main__":
  worker(sys.argv[1:])
