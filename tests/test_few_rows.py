"""The few-rows CPU kernel (slnjax/kernels/few_rows.cc) and its use by a decoding lobe."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import decoding
from slnjax import lobes
from slnjax.kernels import few_rows

pytestmark = pytest.mark.skipif(not few_rows.available(),
                                reason=f"few-rows kernel: {few_rows.why_unavailable()}")


@pytest.mark.parametrize("rows", range(1, 9))
@pytest.mark.parametrize("K,N", [(37, 24), (64, 8), (130, 1032)])
def test_kernel_equals_the_product(rows, K, N):
  # K odd / not a multiple of 4: the partial sums' remainder loop (1-4 rows) is exercised.
  rng = np.random.default_rng(rows * K + N)
  x = rng.standard_normal((rows, K), dtype=np.float32)
  w = rng.standard_normal((K, N), dtype=np.float32)
  got = jax.jit(few_rows.dense)(x, w, few_rows.pack(w))
  ref = x.astype(np.float64) @ w.astype(np.float64)
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5 * np.sqrt(K))


def test_pack_layout():
  w = jnp.arange(3 * 16, dtype=jnp.float32).reshape(3, 16)
  p = few_rows.pack(w)
  assert p.shape == (2, 3, 8)
  assert float(p[1, 2, 3]) == float(w[2, 8 + 3])
  # the library's packing (several 64-tile blocks, one partial) equals XLA's transpose
  w = jax.random.normal(jax.random.key(0), (37, 8 * 150))
  np.testing.assert_array_equal(np.asarray(jax.jit(few_rows.pack)(w)),
                                np.asarray(few_rows.pack_reference(w)))
  assert "slnjax_few_rows_pack" in jax.jit(few_rows.pack).lower(w).as_text()


def test_gradient_is_the_plain_products():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((4, 16), dtype=np.float32))
  w = jnp.asarray(rng.standard_normal((16, 32), dtype=np.float32))
  c = jnp.asarray(rng.standard_normal((4, 32), dtype=np.float32))
  loss = lambda f: lambda x, w: jnp.sum(f(x, w) * c)
  kern = loss(lambda x, w: few_rows.dense(x, w, few_rows.pack(jax.lax.stop_gradient(w))))
  gk = jax.jit(jax.grad(kern, argnums=(0, 1)))(x, w)
  gp = jax.grad(loss(lambda x, w: x @ w), argnums=(0, 1))(x, w)
  for a, b in zip(gk, gp):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_refused():
  w = jnp.ones((16, 32))
  with pytest.raises(ValueError, match="1-8 rows"):
    few_rows.dense(jnp.ones((9, 16)), w, few_rows.pack(w))
  with pytest.raises(ValueError, match="w_TK8 = pack"):
    few_rows.dense(jnp.ones((2, 16)), w, few_rows.pack(jnp.ones((16, 16))))
  assert not few_rows.supports(jnp.ones((2, 16)), jnp.ones((16, 30)))  # N % 8
  assert not few_rows.supports(jnp.ones((2, 16), jnp.bfloat16), jnp.ones((16, 32)))


def test_config_is_checked():
  with pytest.raises(ValueError, match="expected one of"):
    lobes.tiny(decode_kernel="fast")
  with pytest.raises(ValueError, match="needs unrolled layers when decoding"):
    lobes.tiny(decode_kernel="cpu_few_rows", decode_layers="scan")
  with pytest.raises(ValueError, match="needs unrolled layers when decoding"):
    lobes.tiny(decode_kernel="cpu_few_rows", scan_layers=False, dtype="bfloat16")
  cfg = lobes.tiny("neox", scan_layers=False, decode_kernel="cpu_few_rows")
  assert lobes.packed_weights(cfg.replace(decode_kernel="xla"), None) is None
  scanned = lobes.init(cfg.replace(scan_layers=True, decode_kernel="xla"), jax.random.key(0))
  with pytest.raises(ValueError, match="prepare_decoding"):
    lobes.packed_weights(cfg, scanned)


@pytest.mark.parametrize("family", ["neox", "llama"])
def test_decoded_token_equals_xla(family):
  # vocab 264: the LM head is packed too; llama's gate goes through the kernel as well.
  cfg = lobes.tiny(family, vocab_size=264, scan_layers=False, decode_kernel="cpu_few_rows")
  params = lobes.init(cfg, jax.random.key(0))
  packed = lobes.packed_weights(cfg, params)
  assert set(packed["layer_0"]["attn"]) == {"q", "k", "v", "o"} and "lm_head" in packed
  B, S = 4, 8
  ids = jax.random.randint(jax.random.key(1), (B, 5), 0, cfg.vocab_size)

  @jax.jit
  def step(packed):
    out = lobes.apply(cfg, params, ids=ids, cache=lobes.init_cache(cfg, B, S))
    e = jax.random.normal(jax.random.key(2), (B, 1, cfg.d_model))
    return lobes.apply(cfg, params, embeds=e, cache=out["cache"],
                       start=jnp.full((B,), 5, jnp.int32), packed=packed)
  got, ref = step(packed), step(None)
  np.testing.assert_allclose(got["logits_BTV"], ref["logits_BTV"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["cache"]["k"][1], ref["cache"]["k"][1], rtol=1e-5, atol=1e-6)


def _while_bodies(hlo: str) -> list[str]:
  comps = {m.group(1): m.group(0) for m in re.finditer(r"^%(\S+) .*?^}", hlo, re.M | re.S)}
  bodies, todo = [], re.findall(r"body=%([\w.\-]+)", hlo)
  while todo:
    name = todo.pop()
    if name in comps and name not in bodies:
      bodies.append(name)
      todo += re.findall(r"body=%([\w.\-]+)", comps[name])
  return [comps[b] for b in bodies]


def test_rollout_packs_outside_the_loop_and_writes_the_same_tokens():
  cfg = lobes.tiny("neox", vocab_size=264, scan_layers=False)
  compiled, args, _ = decoding.build(cfg, 4, 4, 2, prompt=5)
  kcompiled, kargs, _ = decoding.build(cfg.replace(decode_kernel="cpu_few_rows"), 4, 4, 2,
                                       prompt=5, params={"left": args[0]["left"]})
  np.testing.assert_array_equal(np.asarray(kcompiled(*kargs)), np.asarray(compiled(*args)))
  hlo = kcompiled.as_text()
  # 2 layers x (q, k, v, o, up, down) + the LM head, each a custom call in the token loop
  assert hlo.count('custom_call_target="slnjax_few_rows_matmul"') == 13
  bodies = _while_bodies(hlo)
  assert bodies and any("slnjax_few_rows_matmul" in b for b in bodies)
  packed_shape = re.compile(r"= f32\[\d+,\d+,8\]\{2,1,0\} (fusion|transpose|copy)\(")
  assert not any(packed_shape.search(b) for b in bodies), "weights packed inside the loop"
