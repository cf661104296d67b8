"""Lobes: KV-cached decode equals the full forward; heads; logical axes; bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import lobes

FAMILIES = ["llama", "neox"]
_apply = jax.jit(lobes.apply, static_argnums=0)


def _cfg(family, **kw):
  return lobes.tiny(family, score_head=True, **kw)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scan_layers", [True, False])
@pytest.mark.parametrize("inputs", ["ids", "embeds"])
def test_incremental_decode_equals_full_forward(family, scan_layers, inputs):
  cfg = _cfg(family, scan_layers=scan_layers)
  params = lobes.init(cfg, jax.random.key(0))
  B, T = 3, 9
  ids_BT = jax.random.randint(jax.random.key(1), (B, T), 0, cfg.vocab_size)
  x = {"ids": ids_BT} if inputs == "ids" else {
      "embeds": jax.random.normal(jax.random.key(2), (B, T, cfg.d_model))}
  full_BTV = _apply(cfg, params, **x)["logits_BTV"]
  # Ragged per-example offsets: example b's tokens start at its own position.
  offsets_B = jnp.array([0, 2, 5])
  cache = lobes.init_cache(cfg, B, T + 8)
  pre = {k: v[:, :3] for k, v in x.items()}
  out = _apply(cfg, params, **pre, cache=cache, start=offsets_B)
  got, cache = [out["logits_BTV"]], out["cache"]
  for t in range(3, T):
    step = {k: v[:, t:t + 1] for k, v in x.items()}
    out = _apply(cfg, params, **step, cache=cache, start=offsets_B + t)
    got.append(out["logits_BTV"])
    cache = out["cache"]
  inc_BTV = jnp.concatenate(got, axis=1)
  np.testing.assert_allclose(inc_BTV[0], full_BTV[0], atol=2e-5, rtol=1e-5)
  # Offset rows: the same sequence written in one chunk at the same offset (rope phases
  # shift with the position, so the plain forward is not the reference there).
  one_chunk = _apply(cfg, params, **x, cache=lobes.init_cache(cfg, B, T + 8),
                     start=offsets_B)["logits_BTV"]
  np.testing.assert_allclose(inc_BTV, one_chunk, atol=2e-5, rtol=1e-5)


def test_logits_at_equals_the_full_logits_rows():
  cfg = _cfg("llama")
  params = lobes.init(cfg, jax.random.key(0))
  ids_BT = jax.random.randint(jax.random.key(1), (3, 7), 0, cfg.vocab_size)
  at_B = jnp.array([6, 0, 3])
  full_BTV = lobes.apply(cfg, params, ids=ids_BT)["logits_BTV"]
  out = lobes.apply(cfg, params, ids=ids_BT, logits_at=at_B)
  assert "logits_BTV" not in out
  np.testing.assert_allclose(out["logits_BV"], full_BTV[jnp.arange(3), at_B], atol=1e-6)
  with pytest.raises(ValueError, match="logits_at has shape"):
    lobes.apply(cfg, params, ids=ids_BT, logits_at=at_B[:2])


@pytest.mark.parametrize("scan_layers", [True, False])
def test_cache_write_mask_keeps_halted_examples(scan_layers):
  cfg = _cfg("llama", scan_layers=scan_layers)
  params = lobes.init(cfg, jax.random.key(0))
  cache = lobes.init_cache(cfg, 2, 8)
  cache = lobes.apply(cfg, params, ids=jnp.ones((2, 3), jnp.int32), cache=cache,
                      start=jnp.zeros(2, jnp.int32))["cache"]
  out = lobes.apply(cfg, params, ids=jnp.full((2, 2), 7, jnp.int32), cache=cache,
                    start=jnp.array([3, 3]), write_mask=jnp.array([True, False]))["cache"]
  new, old = lobes.stacked_cache(out)["k"], lobes.stacked_cache(cache)["k"]
  assert new.shape == (cfg.n_layers, 2, cfg.kv_heads, 8, cfg.hd)  # [L,B,K,S,E]
  np.testing.assert_array_equal(new[:, 1], old[:, 1])
  assert not np.array_equal(new[:, 0, :, 3:5], old[:, 0, :, 3:5])
  np.testing.assert_array_equal(new[:, 0, :, :3], old[:, 0, :, :3])


def test_cache_of_another_layout_is_refused():
  cfg = _cfg("llama", scan_layers=False)
  params = lobes.init(cfg, jax.random.key(0))
  ids = jnp.ones((2, 3), jnp.int32)
  assert len(lobes.init_cache(cfg, 2, 8)["k"]) == cfg.n_layers  # one buffer per layer
  for bad in (lobes.init_cache(cfg.replace(scan_layers=True), 2, 8),  # stacked layers
              lobes.init_cache(cfg, 3, 8),  # another batch
              lobes.init_cache(cfg.replace(n_layers=cfg.n_layers + 1), 2, 8),
              {"k": None, "v": None}):
    with pytest.raises(ValueError, match="lobes.init_cache"):
      lobes.apply(cfg, params, ids=ids, cache=bad, start=jnp.zeros(2, jnp.int32))


@pytest.mark.parametrize("family", FAMILIES)
def test_scanned_and_unrolled_layers_compute_the_same(family):
  """The unrolled layers' two-dimensional projections and per-layer cache buffers give the
  scanned layers' logits and cache, from the same params relaid out."""
  cfg = _cfg(family, scan_layers=True)
  params = lobes.init(cfg, jax.random.key(0))
  unrolled = lobes.with_layer_layout(params, scan_layers=False)
  assert "layers" not in unrolled and f"layer_{cfg.n_layers - 1}" in unrolled
  back = lobes.with_layer_layout(unrolled, scan_layers=True)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  ids = jax.random.randint(jax.random.key(1), (2, 5), 0, cfg.vocab_size)
  outs = [lobes.apply(c, p, ids=ids, cache=lobes.init_cache(c, 2, 8),
                      start=jnp.array([0, 2])) for c, p in
          ((cfg, params), (cfg.replace(scan_layers=False), unrolled))]
  np.testing.assert_allclose(outs[0]["logits_BTV"], outs[1]["logits_BTV"], atol=1e-5)
  np.testing.assert_allclose(lobes.stacked_cache(outs[0]["cache"])["v"],
                             lobes.stacked_cache(outs[1]["cache"])["v"], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_score_head_reads_last_valid_position(family):
  cfg = _cfg(family)
  params = lobes.init(cfg, jax.random.key(0))
  ids = jax.random.randint(jax.random.key(1), (1, 6), 0, cfg.vocab_size)
  padded = ids.at[:, 4:].set(0)
  a = lobes.apply(cfg, params, ids=padded, lengths=jnp.array([4]))["score_logit_B"]
  b = lobes.apply(cfg, params, ids=ids[:, :4])["score_logit_B"]
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_every_param_has_logical_axes():
  for family in FAMILIES:
    cfg = _cfg(family, score_input=True)
    params = lobes.init(cfg, jax.random.key(0))
    axes = lobes.logical_axes(cfg)
    for (path, p), spec in zip(jax.tree_util.tree_leaves_with_path(params),
                               jax.tree.leaves(axes, is_leaf=lambda x: isinstance(
                                   x, jax.sharding.PartitionSpec))):
      assert len(spec) == p.ndim, (path, spec, p.shape)
      assert all(a is not None for a in spec), (path, spec)


def test_gqa_and_neox_shapes():
  cfg = lobes.tiny("llama", n_heads=4, n_kv_heads=2)
  p = lobes.init(cfg, jax.random.key(0))
  assert p["layers"]["attn"]["q"].shape == (2, 32, 4, 8)
  assert p["layers"]["attn"]["k"].shape == (2, 32, 2, 8)
  neox = lobes.pythia_70m()
  assert neox.rotary_dim == 16 and neox.is_parallel and neox.has_attn_bias
  shapes = jax.eval_shape(lambda: lobes.init(neox, jax.random.key(0)))
  assert lobes.param_count(shapes) == 70_426_624


def test_bf16_compute():
  cfg = _cfg("neox", dtype="bfloat16")
  p = lobes.init(cfg, jax.random.key(0))
  out = lobes.apply(cfg, p, ids=jnp.ones((1, 4), jnp.int32))
  assert out["logits_BTV"].dtype == jnp.bfloat16
  assert p["embedding"].dtype == jnp.float32


def test_bad_input_errors():
  cfg = _cfg("llama")
  p = lobes.init(cfg, jax.random.key(0))
  with pytest.raises(ValueError, match="expected"):
    lobes.apply(cfg, p, embeds=jnp.ones((1, 3, cfg.d_model + 1)))
  with pytest.raises(ValueError, match="exactly one"):
    lobes.apply(cfg, p)
  with pytest.raises(ValueError, match="family"):
    lobes.LobeConfig(family="gpt2")
  with pytest.raises(ValueError, match="Unknown lobe config keys"):
    lobes.LobeConfig.from_dict({"d_modle": 3})


def test_init_compiles_once_per_config():
  from slnjax.lobes import transformer
  cfg = lobes.tiny("llama", n_layers=1, d_model=48)
  before = transformer._init_boxed._cache_size()
  a, b = lobes.init(cfg, jax.random.key(0)), lobes.init(cfg, jax.random.key(1))
  assert transformer._init_boxed._cache_size() == before + 1  # another key: no recompile
  assert not np.array_equal(a["embedding"], b["embedding"])
  lobes.init(cfg.replace(d_model=32), jax.random.key(0))
  assert transformer._init_boxed._cache_size() == before + 2  # another config: compiled
  assert jax.tree.structure(a) == jax.tree.structure(
      jax.eval_shape(lambda: lobes.init(cfg, jax.random.key(0))))
