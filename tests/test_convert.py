"""Pretrained lobes: Hugging Face checkpoints imported with exact parity to transformers.

Small random Llama / GPT-NeoX models are built with transformers + torch, saved with
save_pretrained into tmp_path and imported with slnjax.convert.
"""
import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
from safetensors import safe_open  # pylint: disable=g-import-not-at-top
from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

from slnjax.lobes import apply, init_cache, stacked_cache  # pylint: disable=g-import-not-at-top
from slnjax import convert, data
from slnjax.convert import safetensors_io as sio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
LLAMA = {  # name -> (LlamaConfig kwargs, save_pretrained max_shard_size)
    "gqa": (dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2), None),
    "tied_llama3_mqa_sharded": (dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=1,
                                     tie_word_embeddings=True, rope_theta=10000.0,
                                     rope_scaling=dict(LLAMA3)), "20KB"),
    "headdim_bias_linear": (dict(hidden_size=32, num_attention_heads=4, head_dim=12,
                                 attention_bias=True, rope_theta=1000.0,
                                 rope_scaling={"rope_type": "linear", "factor": 2.0}), None),
}
NEOX = {
    "parallel": (dict(rotary_pct=0.25), None),
    "sequential_tied": (dict(use_parallel_residual=False, rotary_pct=0.5,
                             tie_word_embeddings=True, hidden_act="gelu_new"), "20KB"),
    "no_bias_full_rotary": (dict(attention_bias=False, rotary_pct=1.0, rotary_emb_base=500.0),
                            None),
}
SHAPES = ((1, 1), (2, 9), (3, 32), (4, 5), (1, 17), (2, 24))  # (batch, length)


def _randomize(model, seed=0, scale=0.1):
  """Every weight random (norm scales near 1, biases non-zero), so every mapping is exercised."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * scale
      is_scale = "norm" in name and name.endswith("weight")
      p.copy_(noise + (1.0 if is_scale else 0.0))
  return model.eval()


def _hf_model(family, name, vocab=64, layers=2, ffn=64, **extra):
  kw, _ = (LLAMA if family == "llama" else NEOX)[name]
  kw = dict(vocab_size=vocab, num_hidden_layers=layers, intermediate_size=ffn,
            **{"hidden_size": 32, "num_attention_heads": 4, **kw}, **extra)
  if family == "llama":
    return _randomize(transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)))
  return _randomize(transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**kw)))


def _saved(tmp_path, family, name, dtype=None, **extra):
  model = _hf_model(family, name, **extra)
  if dtype is not None:
    model = model.to(dtype)
  path = str(tmp_path / f"{family}_{name}")
  shard = (LLAMA if family == "llama" else NEOX)[name][1]
  model.save_pretrained(path, **({"max_shard_size": shard} if shard else {}))
  return model, path


@functools.partial(jax.jit, static_argnums=0)
def _logits(cfg, params, ids):
  return apply(cfg, params, ids=ids)["logits_BTV"]


def _ids(batch, length, vocab=64, seed=0):
  return np.random.default_rng(seed).integers(0, vocab, (batch, length)).astype(np.int32)


def _hf_logits(model, ids):
  with torch.no_grad():
    logits = model(torch.as_tensor(ids, dtype=torch.long)).logits
  return (logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits).numpy()


CASES = [("llama", n) for n in LLAMA] + [("neox", n) for n in NEOX]


@pytest.mark.parametrize("k,family,name", [(k, *c) for k, c in enumerate(CASES)])
def test_logits_match_transformers_float32(tmp_path, k, family, name):
  model, path = _saved(tmp_path, family, name)
  if name == "tied_llama3_mqa_sharded":
    assert os.path.exists(os.path.join(path, sio.INDEX_FILE))
  cfg, params = convert.load_hf(path, scan_layers=name != "gqa")
  assert ("lm_head" in params) == (not model.config.tie_word_embeddings)
  assert ("layers" in params) == (name != "gqa")
  for batch, length in (SHAPES[k % 3], SHAPES[3 + (k + 1) % 3]):  # all shapes, 2 per case
    ids = _ids(batch, length)
    ref = _hf_logits(model, ids)
    err = np.abs(np.asarray(_logits(cfg, params, ids)) - ref).max()
    assert err < 1e-5, (batch, length, err, np.abs(ref).max())


def test_llama3_scaling_is_exercised(tmp_path):
  """The llama3 case above has high-, medium- and low-frequency bands (all three branches)."""
  model = _hf_model("llama", "tied_llama3_mqa_sharded")
  inv = model.model.rotary_emb.inv_freq.numpy()
  plain = 1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16)
  wavelen = 2 * math.pi / plain
  assert (wavelen < 64 / 4).any() and (wavelen > 64).any()
  assert ((wavelen >= 16) & (wavelen <= 64)).any()
  np.testing.assert_allclose(inv, _inv_freq64(10000.0, 16, LLAMA3), rtol=1e-6)
  assert not np.allclose(inv, plain, rtol=1e-3)


def _inv_freq64(theta, dim, scaling=None):
  """Reference rotary inverse frequencies in float64 (Llama 3.1's smoothing when asked)."""
  inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
  if not scaling:
    return inv
  f, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
  old = scaling["original_max_position_embeddings"]
  wavelen = 2 * math.pi / inv
  smooth = (old / wavelen - lo) / (hi - lo)
  mid = (1 - smooth) * inv / f + smooth * inv
  return np.where(wavelen < old / hi, inv, np.where(wavelen > old / lo, inv / f, mid))


def _float64_reference(model, inv_freq):
  """transformers' float64 path keeps float32 islands (RMSNorm upcasts to float32, rotary
  tables are built in float32): replace them by the same formulas in float64."""
  inv_t = torch.tensor(inv_freq, dtype=torch.float64)

  def rotary(x, position_ids):
    freqs = position_ids[..., None].double() * inv_t
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

  def rms_norm(self, h):
    return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) +
                                          self.variance_epsilon))

  model = model.double()
  model.base_model.rotary_emb.forward = rotary
  for mod in model.modules():
    if type(mod).__name__ == "LlamaRMSNorm":
      mod.forward = types.MethodType(rms_norm, mod)
  return model


@pytest.fixture
def x64():
  prev = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", prev)


@pytest.mark.parametrize("family,name,shape", [("llama", "tied_llama3_mqa_sharded", (3, 20)),
                                               ("neox", "parallel", (2, 13))])
def test_logits_match_transformers_float64(tmp_path, x64, family, name, shape):
  model = _hf_model(family, name)
  hd = model.config.hidden_size // model.config.num_attention_heads
  if family == "llama":
    rp = model.config.rope_parameters
    inv = _inv_freq64(rp["rope_theta"], hd, rp if rp["rope_type"] == "llama3" else None)
  else:
    inv = _inv_freq64(10000.0, int(hd * 0.25))
  model = _float64_reference(model, inv)
  path = str(tmp_path / "f64")
  model.save_pretrained(path)
  cfg, params = convert.load_hf(path)
  assert cfg.dtype == cfg.param_dtype == "float64"
  assert jax.tree.leaves(params)[0].dtype == jnp.float64
  ids = _ids(*shape)
  out = np.asarray(_logits(cfg, params, jnp.asarray(ids)))
  assert out.dtype == np.float64
  err = np.abs(out - _hf_logits(model, ids)).max()
  assert err < 1e-10, (shape, err)


def _greedy(cfg, params, prompt, steps):
  """Greedy decode with our KV cache: the prompt in one chunk, then one token per step."""
  B, T = prompt.shape
  step = jax.jit(lambda p, ids, cache, start: apply(cfg, p, ids=ids, cache=cache, start=start))
  out = step(params, jnp.asarray(prompt), init_cache(cfg, B, T + steps), jnp.zeros(B, jnp.int32))
  toks, logits = [], [out["logits_BTV"][:, -1]]
  for k in range(steps):
    toks.append(jnp.argmax(logits[-1], axis=-1).astype(jnp.int32))
    if k + 1 < steps:
      out = step(params, toks[-1][:, None], out["cache"], jnp.full(B, T + k, jnp.int32))
      logits.append(out["logits_BTV"][:, 0])
  return np.stack(toks, 1), np.stack(logits, 1), out["cache"]


@pytest.mark.parametrize("family,name", [("llama", "gqa"), ("neox", "parallel")])
def test_kv_cache_decode_and_greedy_generation_match(tmp_path, family, name):
  model, path = _saved(tmp_path, family, name)
  model.generation_config.eos_token_id = None
  model.generation_config.pad_token_id = 0
  cfg, params = convert.load_hf(path)
  prompt, steps = _ids(2, 7, seed=3), 12
  toks, logits, cache = _greedy(cfg, params, prompt, steps)
  with torch.no_grad():
    prompt_t = torch.as_tensor(prompt, dtype=torch.long)
    gen = model.generate(prompt_t, attention_mask=torch.ones_like(prompt_t), do_sample=False,
                         max_new_tokens=steps, min_new_tokens=steps)
    np.testing.assert_array_equal(toks, gen[:, prompt.shape[1]:].numpy())
    # transformers with its own cache, fed our tokens: per-step logits and the cached k/v.
    out = model(prompt_t, use_cache=True)
    ref = [out.logits[:, -1]]
    for k in range(steps - 1):
      out = model(torch.as_tensor(toks[:, k:k + 1], dtype=torch.long),
                  past_key_values=out.past_key_values, use_cache=True)
      ref.append(out.logits[:, -1])
  assert np.abs(logits - torch.stack(ref, 1).numpy()).max() < 1e-5
  S = prompt.shape[1] + steps - 1
  cache = stacked_cache(cache)  # [L,B,K,S,E], the layout of transformers' cache
  for layer, hf_layer in enumerate(out.past_key_values.layers):
    for ours, theirs in ((cache["k"], hf_layer.keys), (cache["v"], hf_layer.values)):
      assert np.abs(np.asarray(ours[layer, :, :, :S]) - theirs.numpy()).max() < 1e-5


def _tensors(path):
  table = sio.tensor_table(path)
  out = {}
  for name, info in table.items():
    with safe_open(os.path.join(path, info.file), framework="np") as f:
      out[name] = f.get_tensor(name)
  return out


@pytest.mark.parametrize("family,name,dtype", [
    ("llama", "tied_llama3_mqa_sharded", None), ("llama", "headdim_bias_linear", torch.bfloat16),
    ("neox", "parallel", None), ("neox", "sequential_tied", torch.float16)])
def test_export_round_trip_is_bit_exact(tmp_path, family, name, dtype):
  model, path = _saved(tmp_path, family, name, dtype=dtype)
  cfg, params = convert.load_hf(path, scan_layers=family == "llama")
  out = str(tmp_path / "exported")
  files = convert.save_hf(out, cfg, params, base_config=convert.read_hf_config(path),
                          max_shard_bytes=20_000 if "sharded" in name else None)
  assert (len(files) > 1) == ("sharded" in name)
  src, dst = _tensors(path), _tensors(out)
  assert sorted(src) == sorted(dst)
  for n in src:
    assert (src[n].dtype, src[n].shape) == (dst[n].dtype, dst[n].shape), n
    assert src[n].tobytes() == dst[n].tobytes(), n
  assert convert.config_from_hf(convert.read_hf_config(out), param_dtype=cfg.param_dtype,
                                scan_layers=cfg.scan_layers) == cfg
  # transformers reads our export as it reads the original (same dtype handling of buffers).
  ids = _ids(2, 9)
  np.testing.assert_array_equal(_hf_logits(type(model).from_pretrained(out).eval(), ids),
                                _hf_logits(type(model).from_pretrained(path).eval(), ids))


def test_critic_starts_from_pretrained_lm_with_fresh_score_head(tmp_path):
  _, path = _saved(tmp_path, "llama", "gqa")
  _, lm = convert.load_hf(path)
  cfg, critic = convert.load_hf(path, score_head=True, lm_head=False, score_input=True,
                                rng=jax.random.key(1))
  assert "lm_head" not in critic and "lm_head" in lm
  assert critic["score_w"].shape == (cfg.d_model,) and critic["score_b"].shape == ()
  assert critic["score_in_w"].shape == (cfg.d_model,)
  for name in ("layers", "embedding", "final_norm"):
    for a, b in zip(jax.tree.leaves(critic[name]), jax.tree.leaves(lm[name])):
      np.testing.assert_array_equal(a, b)
  out = jax.jit(lambda p, ids: apply(cfg, p, ids=ids))(critic, _ids(3, 5))
  assert "logits_BTV" not in out
  assert out["score_logit_B"].shape == (3,) and np.isfinite(out["score_logit_B"]).all()
  _, again = convert.load_hf(path, score_head=True, lm_head=False, score_input=True,
                             rng=jax.random.key(1))
  _, other = convert.load_hf(path, score_head=True, lm_head=False, score_input=True,
                             rng=jax.random.key(2))
  np.testing.assert_array_equal(again["score_w"], critic["score_w"])
  assert not np.array_equal(other["score_w"], critic["score_w"])
  assert float(jnp.std(critic["score_w"])) > 0
  with pytest.raises(ValueError, match="score head"):
    convert.save_hf(str(tmp_path / "x"), cfg, critic)


_SHARDED_SCRIPT = textwrap.dedent("""
    import sys
    import flax.linen as nn, jax, numpy as np
    from slnjax import convert
    from slnjax.convert import safetensors_io as sio
    from slnjax.lobes import apply, logical_axes
    assert jax.device_count() == 4, jax.devices()
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    RULES = [  # heads on one mesh axis; then head_dim split too (reads inside each head)
        [("heads", "model"), ("kv_heads", "model"), ("mlp", "model"), ("vocab", "model"),
         ("embed", "data")],
        [("kv", "model"), ("heads", "data"), ("kv_heads", "data"), ("mlp", "data"),
         ("vocab", "data")]]
    read_elems = [0]
    real_read = sio.Reader.read
    def counting_read(self, name, slices):
      out = real_read(self, name, slices)
      read_elems[0] += out.size
      return out
    sio.Reader.read = counting_read
    real_make = jax.make_array_from_callback
    calls = []
    def checked_make(shape, sharding, cb):
      def cb2(index):
        before = read_elems[0]
        block = cb(index)
        calls.append((shape, block.shape, read_elems[0] - before))
        return block
      return real_make(shape, sharding, cb2)
    jax.make_array_from_callback = checked_make  # hf.py looks it up on the jax module
    llama, neox = sys.argv[1:]
    CRITIC = {"score_head": True, "lm_head": False}
    for k, (path, overrides, rules) in enumerate([(llama, {}, RULES[0]), (llama, CRITIC, RULES[1]),
                                                  (neox, {}, RULES[1]), (neox, CRITIC, RULES[0])]):
      cfg, full = convert.load_hf(path, **overrides)
      shardings = nn.logical_to_mesh_sharding(logical_axes(cfg), mesh, rules)
      calls.clear()
      cfg2, sharded = convert.load_hf(path, shardings=shardings, **overrides)
      assert cfg2 == cfg
      for a, b, s in zip(jax.tree.leaves(full), jax.tree.leaves(sharded),
                         jax.tree.leaves(shardings)):
        assert b.sharding == s, (b.sharding, s)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
      # each device read exactly its own block, never a whole tensor
      assert calls and all(int(np.prod(blk)) == n for _, blk, n in calls), calls
      assert any(int(np.prod(blk)) < int(np.prod(shp)) for shp, blk, _ in calls)
      if k == 0:  # the sharded lobe runs
        ids = np.arange(12, dtype=np.int32).reshape(2, 6) % cfg.vocab_size
        fwd = jax.jit(lambda p: apply(cfg, p, ids=ids)["logits_BTV"])
        assert np.abs(np.asarray(fwd(sharded)) - np.asarray(fwd(full))).max() < 1e-5
    print("SHARDED-OK")
    """)


def test_sharded_load_reads_only_each_devices_slice(tmp_path):
  paths = [_saved(tmp_path, "llama", "gqa")[1], _saved(tmp_path, "neox", "parallel")[1]]
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
             + " --xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT, *paths], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=240)  # SIGKILL on timeout
  assert proc.returncode == 0 and "SHARDED-OK" in proc.stdout, proc.stderr[-4000:]


def _rewrite(path, drop=(), add=None):
  """Rewrite a single-file checkpoint without `drop` and with extra tensors `add`."""
  f = os.path.join(path, sio.SINGLE_FILE)
  tensors = {k: v for k, v in _tensors(path).items() if k not in drop}
  tensors.update(add or {})
  save_file(tensors, f, metadata={"format": "pt"})


def _edit_config(path, **kw):
  cfg = convert.read_hf_config(path)
  cfg.update(kw)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(cfg, f)


def test_bad_inputs_name_the_tensor_or_field(tmp_path):
  _, path = _saved(tmp_path, "llama", "gqa")
  _, sharded = _saved(tmp_path, "llama", "tied_llama3_mqa_sharded")
  with pytest.raises(FileNotFoundError, match="config.json"):
    convert.load_hf(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    convert.load_hf(str(tmp_path / "nowhere"))
  with open(os.path.join(sharded, sio.INDEX_FILE)) as f:
    shard = json.load(f)["weight_map"]["model.norm.weight"]
  os.remove(os.path.join(sharded, shard))
  with pytest.raises(FileNotFoundError, match=f"lists files that are missing: \\['{shard}'\\]"):
    convert.load_hf(sharded)
  os.remove(os.path.join(sharded, sio.INDEX_FILE))
  for n in os.listdir(sharded):
    if n.endswith(".safetensors"):
      os.remove(os.path.join(sharded, n))
  with pytest.raises(FileNotFoundError, match=r"No \*.safetensors"):
    convert.load_hf(sharded)

  original = convert.read_hf_config(path)
  for edit, pattern in [
      (dict(model_type="gpt2"), "Unsupported architecture: config.json model_type='gpt2'"),
      (dict(intermediate_size=48), r"mlp.gate_proj.weight: \[64, 32\].*\[48, 32\].*"
                                   r"intermediate_size=48"),
      (dict(num_key_value_heads=4), r"self_attn.k_proj.weight.*num_key_value_heads=4"),
      (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}),
       "rope_parameters.rope_type='yarn'"),
      (dict(hidden_act="gelu_fast"), "hidden_act='gelu_fast'"),
      (dict(mlp_bias=True), "mlp_bias"),
      (dict(num_hidden_layers=3), r"missing tensors: \['model.layers.2.input_layernorm"),
      (dict(num_hidden_layers=1), r"unexpected tensors: \['model.layers.1.input_layernorm"),
  ]:
    _edit_config(path, **edit)
    with pytest.raises(ValueError, match=pattern):
      convert.load_hf(path)
    _edit_config(path, **original)
  del original["vocab_size"]
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(original, f)
  with pytest.raises(ValueError, match="lacks the field 'vocab_size'"):
    convert.load_hf(path)
  _edit_config(path, vocab_size=64)

  _rewrite(path, drop=["model.layers.1.mlp.up_proj.weight"],
           add={"model.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match=r"missing tensors: \['model.layers.1.mlp.up_proj.weight'\]"
                     r"(.|\n)*unexpected tensors: \['model.extra.weight'\]"):
    convert.load_hf(path)
  with pytest.raises(ValueError, match="Cannot override \\['d_model'\\]"):
    convert.load_hf(path, d_model=64)

  _, good = _saved(tmp_path, "neox", "parallel")
  cfg, params = convert.load_hf(good)
  wrong = jax.tree.map(lambda _: None, params)
  del wrong["lm_head"]
  with pytest.raises(ValueError, match="missing \\['lm_head'\\]"):
    convert.load_hf(good, shardings=wrong)
  with pytest.raises(FileExistsError, match="already holds"):
    convert.save_hf(good, cfg, params)
  _rewrite(good, add={"gpt_neox.layers.0.attention.bias": np.ones((1, 1, 4, 4), bool),
                      "gpt_neox.layers.0.attention.rotary_emb.inv_freq": np.ones(2, np.float32)})
  convert.load_hf(good)  # old Pythia buffers (masks, rotary tables) are skipped
  tensors = _tensors(good)
  tensors["lm_head.weight"] = tensors.pop("embed_out.weight")  # the head's other name
  save_file(tensors, os.path.join(good, sio.SINGLE_FILE), metadata={"format": "pt"})
  np.testing.assert_array_equal(convert.load_hf(good)[1]["lm_head"], params["lm_head"])
  _rewrite(good, add={"gpt_neox.layers.0.attention.dense.weight": np.zeros((32, 31), np.float32)})
  with pytest.raises(ValueError, match=r"attention.dense.weight: \[32, 31\]"):
    convert.load_hf(good)


def test_legacy_config_fields_convert_like_transformers_5():
  pythia = {"model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": 512,
            "num_hidden_layers": 6, "num_attention_heads": 8, "intermediate_size": 2048,
            "hidden_act": "gelu", "rotary_pct": 0.25, "rotary_emb_base": 10000,
            "use_parallel_residual": True, "layer_norm_eps": 1e-5, "tie_word_embeddings": False,
            "max_position_embeddings": 2048}
  new = transformers.GPTNeoXConfig(**{k: v for k, v in pythia.items() if k != "model_type"})
  assert convert.config_from_hf(pythia) == convert.config_from_hf(new.to_dict())
  assert convert.config_from_hf(pythia).rotary_dim == 16
  llama32 = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 2048,
             "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
             "head_dim": 64, "intermediate_size": 8192, "rms_norm_eps": 1e-5,
             "rope_theta": 500000.0, "tie_word_embeddings": True,
             "max_position_embeddings": 131072,
             "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                              "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
  new = transformers.LlamaConfig(**{k: v for k, v in llama32.items() if k != "model_type"})
  cfg = convert.config_from_hf(llama32)
  assert cfg == convert.config_from_hf(new.to_dict())
  assert (cfg.n_kv_heads, cfg.tie_embeddings, cfg.rope_theta) == (8, True, 500000.0)
  assert dict(cfg.rope_scaling)["factor"] == 32.0


def test_tokenizer_is_read_and_copied_on_export(tmp_path):
  tokenizers = pytest.importorskip("tokenizers")
  _, path = _saved(tmp_path, "neox", "parallel")
  vocab = {"[UNK]": 0, "hello": 1, "world": 2, "</s>": 3}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.save(os.path.join(path, "tokenizer.json"))
  assert data.load_tokenizer(path).encode("hello world") == [1, 2]
  cfg, params = convert.load_hf(path)
  out = str(tmp_path / "out")
  convert.save_hf(out, cfg, params, tokenizer_from=path)
  assert data.load_tokenizer(out).encode("world hello") == [2, 1]
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    data.load_tokenizer(str(tmp_path))


def test_pythia_70m_shape_parity(tmp_path):
  """Pythia-70M's shape: 6 layers, d 512, 8 heads, partial rotary 0.25, vocab 50304 (~8 s)."""
  cfg_hf = transformers.GPTNeoXConfig(vocab_size=50304, hidden_size=512, num_hidden_layers=6,
                                      num_attention_heads=8, intermediate_size=2048,
                                      rotary_pct=0.25, max_position_embeddings=2048)
  model = _randomize(transformers.GPTNeoXForCausalLM(cfg_hf), scale=0.02)
  path = str(tmp_path / "pythia70m")
  model.save_pretrained(path)
  cfg, params = convert.load_hf(path)
  assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.rotary_dim, cfg.vocab_size) == (
      6, 512, 8, 16, 50304)
  for batch, length in ((1, 1), (2, 33)):
    ids = _ids(batch, length, vocab=50304)
    err = np.abs(np.asarray(_logits(cfg, params, ids)) - _hf_logits(model, ids)).max()
    assert err < 1e-5, (batch, length, err)
