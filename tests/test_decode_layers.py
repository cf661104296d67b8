"""LobeConfig.decode_layers: scanned lobes decode with unrolled layers on a CPU ("auto"), the
params relaid out once per call by lobes.prepare_decoding; values and gradients (float64) are
those of the scanned path, and the gradients keep the scanned layout."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import lobes, loop
from slnjax.kernels import few_rows
from slnjax import convert
from loop_helpers import make, prompts

KEY = jax.random.key(3)


def _with_layers(spec, how):
  return dataclasses.replace(spec, left=spec.left.replace(decode_layers=how),
                             right=spec.right.replace(decode_layers=how))


def test_config_and_prepare():
  with pytest.raises(ValueError, match="decode_layers"):
    lobes.tiny(decode_layers="fast")
  cfg = lobes.tiny()
  assert cfg.scan_layers and cfg.decode_layers == "auto"
  assert not lobes.decode_config(cfg).scan_layers  # the tests run on a CPU
  assert lobes.decode_config(cfg.replace(decode_layers="scan")).scan_layers
  assert not lobes.decode_config(cfg.replace(scan_layers=False, decode_layers="scan")).scan_layers
  params = lobes.init(cfg, jax.random.key(0))
  relaid, packed = lobes.prepare_decoding(cfg, params)
  assert "layer_1" in relaid and "layers" not in relaid and packed is None
  assert "layers" in lobes.prepare_decoding(cfg.replace(decode_layers="scan"), params)[0]
  # apply follows the params' layout, whatever the config says
  ids = jnp.array([[5, 6, 7]])
  np.testing.assert_allclose(lobes.apply(cfg, relaid, ids=ids)["logits_BTV"],
                             lobes.apply(cfg, params, ids=ids)["logits_BTV"], atol=1e-5)
  # a runtime field: settable on import, never written to a Hugging Face config
  assert "decode_layers" in convert.RUNTIME_FIELDS
  assert "decode_layers" not in convert.config_to_hf(cfg)


@pytest.mark.parametrize("tall", [False, True])
def test_rollout_equals_scanned(x64, tall):
  spec, pl, pr = make(tall, f64=True, threshold=0.4818)
  ids, plen = prompts()
  run = jax.jit(loop.rollout, static_argnums=0)
  a = run(_with_layers(spec, "auto"), pl, pr, ids, plen, KEY, 0.7)
  b = run(_with_layers(spec, "scan"), pl, pr, ids, plen, KEY, 0.7)
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tall", [False, True])
def test_gradients_equal_scanned(x64, tall):
  spec, pl, pr = make(tall, f64=True, threshold=0.4818, max_turns=3)
  ids, plen = prompts()
  tgt = jax.random.randint(jax.random.key(5), (3, spec.loop.turn_len), 4, 260)

  def loss(spec, a, b):
    d = loop.unroll(spec, a, b, ids, plen, KEY, 0.7, tgt)
    return (jnp.sum(d.left_logp_target_NBM) + jnp.sum(d.score_logit_NB ** 2)
            + 0.1 * jnp.sum(d.left_emb_NBMR ** 2))
  grad = jax.jit(jax.grad(loss, argnums=(1, 2)), static_argnums=0)
  g_u = grad(_with_layers(spec, "unroll"), pl, pr)
  g_s = grad(_with_layers(spec, "scan"), pl, pr)
  assert jax.tree.structure(g_u) == jax.tree.structure((pl, pr))  # scanned layout kept
  for x, y in zip(jax.tree.leaves(g_u), jax.tree.leaves(g_s)):
    assert float(jnp.max(jnp.abs(x - y))) <= 1e-10 * (float(jnp.max(jnp.abs(y))) + 1e-300)
  assert sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(g_u)) > 0


@pytest.mark.skipif(not few_rows.available(), reason="few-rows kernel unavailable")
def test_few_rows_kernel_with_scanned_params():
  # a scanned (training) config decodes on the CPU kernel: prepare_decoding relays and packs
  lc = lobes.tiny("neox", vocab_size=264, decode_kernel="cpu_few_rows")
  spec = loop.DialogueSpec(lc, None, loop=loop.LoopConfig(turn_len=4, max_turns=2,
                                                          threshold=None, mode="greedy"))
  pl = lobes.init(lc, jax.random.key(0))
  ids, plen = prompts(B=2)
  run = jax.jit(loop.rollout, static_argnums=0)
  a = run(spec, pl, None, ids, plen, KEY, 1.0)
  xla = dataclasses.replace(spec, left=lc.replace(decode_kernel="xla", decode_layers="scan"))
  b = run(xla, pl, None, ids, plen, KEY, 1.0)
  np.testing.assert_array_equal(a.left_ids_NBM, b.left_ids_NBM)
  np.testing.assert_allclose(a.left_logp_NBM, b.left_logp_NBM, atol=1e-4)
