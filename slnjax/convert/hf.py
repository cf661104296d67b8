"""Pretrained lobes: import and export Hugging Face checkpoints (Llama family, GPT-NeoX/Pythia).

    cfg, params = load_hf("/ckpt/pythia-70m")                     # LobeConfig + params pytree
    cfg, params = load_hf(path, score_head=True, lm_head=False)    # a critic: fresh score head
    cfg, params = load_hf(path, shardings=named_shardings)         # each device reads its slice
    save_hf("/out", cfg, params, base_config=read_hf_config(path)) # back to safetensors

Local directories only: `config.json`, `model.safetensors` or a sharded set with
`model.safetensors.index.json`, optionally `tokenizer.json`.

Each lobe parameter is described by a TensorMap (see safetensors_io.py): the HF tensor that
holds it and how that tensor's axes factor into named sizes (v vocab, d d_model, h heads,
k kv heads, e head_dim, f d_ff, j the q/k/v third of GPT-NeoX's fused query_key_value, whose
rows are grouped per head as [q_h, k_h, v_h]). Both import and export follow from it.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from slnjax.convert import safetensors_io as sio
from slnjax.convert.safetensors_io import TensorMap
from slnjax.lobes.config import LobeConfig
from slnjax.lobes.transformer import init, module

FAMILY_OF = {"llama": "llama", "gpt_neox": "neox"}  # HF model_type -> lobe family
# LobeConfig fields that do not change the architecture, so a caller may set them on import.
RUNTIME_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat", "lm_head", "score_head",
                  "score_input", "decode_kernel", "decode_layers")
_ACTS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu_new",
         "gelu_pytorch_tanh": "gelu_pytorch_tanh", "relu": "relu"}
_ACT_TO_HF = {"gelu_tanh": "gelu_pytorch_tanh"}
# Buffers of old checkpoints that carry no learned weights (causal masks, rotary tables).
_IGNORED = re.compile(r"(\.rotary_emb\.inv_freq|\.attention\.bias|\.attention\.masked_bias)$")
_HEAD_NAMES = {"llama": ("lm_head.weight",), "neox": ("embed_out.weight", "lm_head.weight")}
_LEGACY_KEYS = ("rope_theta", "rope_scaling", "rotary_pct", "rotary_emb_base",
                "partial_rotary_factor", "torch_dtype")
_HF_FIELD = {"v": "vocab_size", "d": "hidden_size", "h": "num_attention_heads",
             "k": "num_key_value_heads", "e": "head_dim", "f": "intermediate_size", "j": "q|k|v"}
_FRESH = ("score_w", "score_b", "score_in_w", "score_in_b")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json")


def _m(path, hf, hf_axes, lobe_axes, **pick):
  return TensorMap(tuple(path.split("/")), hf, tuple(hf_axes.split(",")), lobe_axes,
                   tuple(pick.items()))


def _block_maps(cfg: LobeConfig) -> list[TensorMap]:
  if cfg.family == "llama":
    p = "model.layers.{i}."
    maps = [_m("attn_norm/scale", p + "input_layernorm.weight", "d", "d"),
            _m("attn/q", p + "self_attn.q_proj.weight", "he,d", "dhe"),
            _m("attn/k", p + "self_attn.k_proj.weight", "ke,d", "dke"),
            _m("attn/v", p + "self_attn.v_proj.weight", "ke,d", "dke"),
            _m("attn/o", p + "self_attn.o_proj.weight", "d,he", "hed")]
    if cfg.has_attn_bias:
      maps += [_m("attn/q_bias", p + "self_attn.q_proj.bias", "he", "he"),
               _m("attn/k_bias", p + "self_attn.k_proj.bias", "ke", "ke"),
               _m("attn/v_bias", p + "self_attn.v_proj.bias", "ke", "ke"),
               _m("attn/o_bias", p + "self_attn.o_proj.bias", "d", "d")]
    return maps + [_m("mlp_norm/scale", p + "post_attention_layernorm.weight", "d", "d"),
                   _m("mlp/gate", p + "mlp.gate_proj.weight", "f,d", "df"),
                   _m("mlp/up", p + "mlp.up_proj.weight", "f,d", "df"),
                   _m("mlp/down", p + "mlp.down_proj.weight", "d,f", "fd")]
  p = "gpt_neox.layers.{i}."
  qkv = p + "attention.query_key_value."
  maps = [_m("attn_norm/scale", p + "input_layernorm.weight", "d", "d"),
          _m("attn_norm/bias", p + "input_layernorm.bias", "d", "d"),
          _m("attn/q", qkv + "weight", "hje,d", "dhe", j=0),
          _m("attn/k", qkv + "weight", "hje,d", "dhe", j=1),
          _m("attn/v", qkv + "weight", "hje,d", "dhe", j=2),
          _m("attn/o", p + "attention.dense.weight", "d,he", "hed")]
  if cfg.has_attn_bias:
    maps += [_m("attn/q_bias", qkv + "bias", "hje", "he", j=0),
             _m("attn/k_bias", qkv + "bias", "hje", "he", j=1),
             _m("attn/v_bias", qkv + "bias", "hje", "he", j=2),
             _m("attn/o_bias", p + "attention.dense.bias", "d", "d")]
  return maps + [_m("mlp_norm/scale", p + "post_attention_layernorm.weight", "d", "d"),
                 _m("mlp_norm/bias", p + "post_attention_layernorm.bias", "d", "d"),
                 _m("mlp/up", p + "mlp.dense_h_to_4h.weight", "f,d", "df"),
                 _m("mlp/up_bias", p + "mlp.dense_h_to_4h.bias", "f", "f"),
                 _m("mlp/down", p + "mlp.dense_4h_to_h.weight", "d,f", "fd"),
                 _m("mlp/down_bias", p + "mlp.dense_4h_to_h.bias", "d", "d")]


def _top_maps(cfg: LobeConfig) -> tuple[list[TensorMap], list[TensorMap]]:
  """(maps before the blocks, maps after them), in Hugging Face's order."""
  head = _HEAD_NAMES[cfg.family][0]
  if cfg.family == "llama":
    first = [_m("embedding", "model.embed_tokens.weight", "v,d", "vd")]
    last = [_m("final_norm/scale", "model.norm.weight", "d", "d")]
  else:
    first = [_m("embedding", "gpt_neox.embed_in.weight", "v,d", "vd")]
    last = [_m("final_norm/scale", "gpt_neox.final_layer_norm.weight", "d", "d"),
            _m("final_norm/bias", "gpt_neox.final_layer_norm.bias", "d", "d")]
  if cfg.lm_head and not cfg.tie_embeddings:
    last.append(_m("lm_head", head, "v,d", "dv"))
  return first, last


def _sizes(cfg: LobeConfig) -> dict[str, int]:
  return {"v": cfg.vocab_size, "d": cfg.d_model, "h": cfg.n_heads, "k": cfg.kv_heads,
          "e": cfg.hd, "f": cfg.d_ff, "j": 3}


def _hf_shape(tm: TensorMap, sizes) -> tuple[int, ...]:
  return tuple(math.prod(sizes[f] for f in ax) for ax in tm.hf_axes)


def _entries(cfg: LobeConfig) -> list[tuple[TensorMap, int | None]]:
  """(TensorMap, layer index or None) of every lobe param part, in Hugging Face's file order."""
  first, last = _top_maps(cfg)
  blocks = _block_maps(cfg)
  return ([(tm, None) for tm in first] + [(tm, i) for i in range(cfg.n_layers) for tm in blocks]
          + [(tm, None) for tm in last])


def _leaf_path(cfg: LobeConfig, tm: TensorMap, i: int | None) -> tuple[str, ...]:
  if i is None:
    return tm.path
  return (("layers",) if cfg.scan_layers else (f"layer_{i}",)) + tm.path


def _leaf_plan(cfg: LobeConfig) -> dict[tuple[str, ...], tuple[TensorMap, object]]:
  """Lobe param path -> (TensorMap, layers): layers is None (top level), a layer index, or a
  tuple of all layer indices (params stacked on a leading layers axis)."""
  plan: dict = {}
  for tm, i in _entries(cfg):
    path = _leaf_path(cfg, tm, i)
    if i is not None and cfg.scan_layers:
      plan[path] = (tm, plan.get(path, (tm, ()))[1] + (i,))
    else:
      plan[path] = (tm, i)
  return plan


def _hf_names(cfg: LobeConfig) -> dict[str, list[tuple[TensorMap, int | None]]]:
  """HF tensor name -> the (TensorMap, layer) parts it holds, in Hugging Face's file order."""
  names: dict = {}
  for tm, i in _entries(cfg):
    names.setdefault(tm.hf.format(i=i), []).append((tm, i))
  return names


# ---------------------------------------------------------------------------------- config


def read_hf_config(ckpt_dir: str) -> dict:
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"Checkpoint directory {ckpt_dir!r} does not exist.")
  path = os.path.join(ckpt_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: a Hugging Face checkpoint directory needs "
                            "config.json.")
  with open(path) as f:
    return json.load(f)


def _rope_from_hf(hf: dict, family: str):
  """(rope_theta, rope_scaling tuple or None, partial rotary factor) from either the
  transformers-5 `rope_parameters` or the older `rope_theta`/`rope_scaling`/`rotary_pct`."""
  rp = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
  if any(isinstance(v, dict) for v in rp.values()):
    raise ValueError("config.json rope_parameters are nested per layer type; not supported.")
  kind = rp.get("rope_type", rp.get("type", "default"))
  theta = rp.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
  partial = rp.get("partial_rotary_factor", hf.get("partial_rotary_factor",
                                                   hf.get("rotary_pct")))
  partial = float((1.0 if family == "llama" else 0.25) if partial is None else partial)
  if kind == "default":
    return float(theta), None, partial
  keys = {"linear": ("factor",),
          "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                     "original_max_position_embeddings")}.get(kind)
  if keys is None:
    raise ValueError(f"config.json rope_parameters.rope_type={kind!r} is not supported; "
                     "supported: default, linear, llama3.")
  if kind == "llama3" and "original_max_position_embeddings" not in rp:
    rp["original_max_position_embeddings"] = hf.get("max_position_embeddings")
  missing = [k for k in keys if rp.get(k) is None]
  if missing:
    raise ValueError(f"config.json rope_parameters ({kind}) lacks {missing}.")
  scaling = {k: rp[k] for k in keys}
  scaling["rope_type"] = kind
  return float(theta), tuple(sorted(scaling.items())), partial


def config_from_hf(hf: dict, **overrides) -> LobeConfig:
  """LobeConfig from a Hugging Face config.json dict; overrides: RUNTIME_FIELDS only."""
  bad = sorted(set(overrides) - set(RUNTIME_FIELDS))
  if bad:
    raise ValueError(f"Cannot override {bad} on import: they come from config.json. "
                     f"Settable on import: {list(RUNTIME_FIELDS)}.")
  model_type = hf.get("model_type")
  if model_type not in FAMILY_OF:
    raise ValueError(f"Unsupported architecture: config.json model_type={model_type!r} "
                     f"(architectures={hf.get('architectures')}); supported: {sorted(FAMILY_OF)}.")
  family = FAMILY_OF[model_type]

  def req(key):
    if hf.get(key) is None:
      raise ValueError(f"config.json ({model_type}) lacks the field {key!r}.")
    return hf[key]

  act = hf.get("hidden_act", "silu" if family == "llama" else "gelu")
  if act not in _ACTS:
    raise ValueError(f"config.json hidden_act={act!r} is not supported; supported: "
                     f"{sorted(_ACTS)}.")
  theta, scaling, partial = _rope_from_hf(hf, family)
  d, h = req("hidden_size"), req("num_attention_heads")
  kw = dict(family=family, vocab_size=req("vocab_size"), d_model=d,
            n_layers=req("num_hidden_layers"), n_heads=h, d_ff=req("intermediate_size"),
            activation=_ACTS[act], rope_theta=theta, rope_scaling=scaling,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
  if family == "llama":
    if hf.get("mlp_bias"):
      raise ValueError("config.json mlp_bias=true is not supported (llama lobes have no MLP "
                       "biases).")
    if partial != 1.0:
      raise ValueError(f"config.json partial_rotary_factor={partial}: llama rotates whole "
                       "heads; not supported.")
    kv = hf.get("num_key_value_heads") or h
    hd = hf.get("head_dim") or d // h
    kw.update(n_kv_heads=None if kv == h else kv,
              head_dim=None if d % h == 0 and hd == d // h else hd,
              norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
              attn_bias=bool(hf.get("attention_bias", False)), parallel_residual=False)
  else:
    if d % h:
      raise ValueError(f"config.json hidden_size={d} is not divisible by "
                       f"num_attention_heads={h}.")
    kw.update(rotary_pct=partial, norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
              attn_bias=bool(hf.get("attention_bias", True)),
              parallel_residual=bool(hf.get("use_parallel_residual", True)))
  kw.update(overrides)
  try:
    return LobeConfig(**kw)
  except ValueError as e:
    raise ValueError(f"config.json ({model_type}) does not describe a valid lobe: {e}") from e


def config_to_hf(cfg: LobeConfig, base: dict | None = None, dtype: str | None = None) -> dict:
  """A Hugging Face config.json dict for cfg; fields of `base` that cfg does not model
  (bos/eos ids, max_position_embeddings, ...) are kept."""
  scaling = dict(cfg.rope_scaling or ())
  kind = scaling.pop("rope_type", scaling.pop("type", "default"))
  rope = {"rope_type": kind, "rope_theta": cfg.rope_theta, **scaling}
  common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
                intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers,
                num_attention_heads=cfg.n_heads, hidden_act=_ACT_TO_HF.get(cfg.act, cfg.act),
                tie_word_embeddings=cfg.tie_embeddings, attention_bias=cfg.has_attn_bias,
                rope_parameters=rope, dtype=dtype or cfg.param_dtype)
  if cfg.family == "llama":
    if cfg.is_parallel or cfg.rotary_dim != cfg.hd:
      raise ValueError("A llama lobe with a parallel residual or partial rotary has no "
                       "Hugging Face LlamaForCausalLM equivalent.")
    gen = dict(architectures=["LlamaForCausalLM"], model_type="llama", **common,
               num_key_value_heads=cfg.kv_heads, head_dim=cfg.hd, rms_norm_eps=cfg.norm_eps,
               mlp_bias=False)
  else:
    if cfg.kv_heads != cfg.n_heads or cfg.hd * cfg.n_heads != cfg.d_model:
      raise ValueError("GPT-NeoX has neither grouped-query attention nor a free head_dim: "
                       f"n_kv_heads={cfg.kv_heads}, head_dim={cfg.hd} cannot be exported.")
    rope["partial_rotary_factor"] = cfg.rotary_pct if cfg.rotary_pct is not None else 0.25
    gen = dict(architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox", **common,
               layer_norm_eps=cfg.norm_eps, use_parallel_residual=cfg.is_parallel)
  out = {k: v for k, v in (base or {}).items() if k not in _LEGACY_KEYS}
  out.update(gen)
  return out


# ---------------------------------------------------------------------------------- import


def _read_param(read, names, tm, layers, sizes, shape, index, np_dtype) -> np.ndarray:
  ranges = []
  for s, n in zip(index, shape):
    lo, hi, step = s.indices(n)
    if step != 1:
      raise ValueError(f"Strided shard index {index} is not supported.")
    ranges.append((lo, hi))
  if not isinstance(layers, tuple):
    return sio.read_block(read, names[tm.hf.format(i=layers)], tm, sizes, ranges, np_dtype)
  (l0, l1), rest = ranges[0], ranges[1:]
  out = np.empty([hi - lo for lo, hi in ranges], np_dtype)
  for pos in range(l0, l1):
    out[pos - l0] = sio.read_block(read, names[tm.hf.format(i=layers[pos])], tm, sizes, rest,
                                np_dtype)
  return out


def _short(items, n=20):
  items = list(items)
  return f"{items[:n]}{f' ... ({len(items)} in all)' if len(items) > n else ''}"


def _match_tensors(ckpt_dir, cfg, hf, table) -> dict[str, str]:
  """Check the checkpoint against the config before anything is loaded. Returns the HF name
  each expected tensor is stored under (GPT-NeoX's head may be embed_out or lm_head)."""
  sizes = _sizes(cfg)
  heads = _HEAD_NAMES[cfg.family]
  names, missing, mismatched, bad_dtype = {}, [], [], []
  for name, uses in _hf_names(cfg).items():
    tm = uses[0][0]
    stored = next((a for a in ((name,) + heads[1:] if name == heads[0] else (name,))
                   if a in table), None)
    if stored is None:
      missing.append(name)
      continue
    names[name] = stored
    want, info = _hf_shape(tm, sizes), table[stored]
    if info.shape != want:
      fields = ", ".join(f"{_HF_FIELD[f]}={sizes[f]}" for f in dict.fromkeys("".join(tm.hf_axes)))
      mismatched.append(f"{stored}: {list(info.shape)} in {info.file}, but config.json implies "
                        f"{list(want)} ({fields})")
    if info.dtype not in sio.FLOAT_DTYPES:
      bad_dtype.append(f"{stored}: {info.dtype}")
  droppable = set(heads) if (cfg.tie_embeddings or not cfg.lm_head) else set()
  used = set(names.values())
  unexpected = sorted(n for n in table if n not in used and n not in droppable
                      and not _IGNORED.search(n))
  problems = [f"{what}: {_short(items)}" for what, items in (
      ("missing tensors", missing), ("unsupported tensor dtypes", bad_dtype),
      ("unexpected tensors", unexpected)) if items]
  if mismatched:
    problems.insert(1, "shape mismatches:\n    " + "\n    ".join(mismatched))
  if problems:
    raise ValueError(f"Checkpoint {ckpt_dir} does not match its config.json "
                     f"(model_type={hf.get('model_type')!r}); nothing was loaded:\n  "
                     + "\n  ".join(problems))
  return names


def _paths(tree, is_leaf=None) -> dict[tuple[str, ...], object]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
  return {tuple(str(getattr(k, "key", k)) for k in kp): v for kp, v in flat}


def _nest(flat: dict) -> dict:
  out: dict = {}
  for path, v in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return out


def _fresh_params(cfg: LobeConfig, rng, paths) -> dict:
  """New score-head / score-input params, drawn by the lobe's own initializers. Only the
  top-level params of a one-token-vocabulary stand-in are initialised (no blocks run)."""
  stand_in = module(cfg.replace(vocab_size=1, lm_head=False, tie_embeddings=False))
  params = nn.meta.unbox(stand_in.init(rng, method=lambda m: m.embedding)["params"])
  return {p: params[p[0]] for p in paths}


def load_hf(ckpt_dir: str, *, shardings=None, rng=None, **overrides):
  """(LobeConfig, params) from a local Hugging Face checkpoint directory.

  overrides: any of RUNTIME_FIELDS, e.g. param_dtype="float32" (default: the stored dtype),
  dtype (compute; default float32, float64 for float64 checkpoints), scan_layers,
  score_head=True / lm_head=False for a critic (its score head is fresh, drawn from `rng`,
  default key 0; a dropped lm_head tensor is skipped on purpose).
  shardings: a pytree of jax.sharding.Sharding (or None leaves) shaped like params; each param
  is then built with jax.make_array_from_callback, every device reading only its slice.
  Every mismatch (missing, unexpected or mis-shaped tensors) is reported before any load.
  """
  hf = read_hf_config(ckpt_dir)
  table = sio.tensor_table(ckpt_dir)
  with sio.Reader(ckpt_dir, table) as reader:
    return _load(ckpt_dir, hf, table, reader.read, shardings, rng, overrides)


def load_arrays(hf: dict, arrays: dict[str, np.ndarray], *, source: str = "arrays",
                shardings=None, rng=None, **overrides):
  """(LobeConfig, params) from a config.json dict and in-memory tensors named and laid out as
  in a Hugging Face checkpoint (e.g. dequantized GGUF tensors, gguf_import.py); the same
  checks and options as load_hf."""
  codes = {np.dtype(v): k for k, v in sio.FLOAT_DTYPES.items() if k != "BF16"}
  table = {n: sio.TensorInfo(source, tuple(a.shape), codes.get(a.dtype, str(a.dtype)))
           for n, a in arrays.items()}
  return _load(source, hf, table, lambda name, slices: arrays[name][slices], shardings, rng,
               overrides)


def _load(ckpt_dir, hf, table, read, shardings, rng, overrides):
  cfg = config_from_hf(hf, **overrides)
  embed = _top_maps(cfg)[0][0].hf
  if "param_dtype" not in overrides and embed in table:
    stored = sio.FLOAT_DTYPES.get(table[embed].dtype, "float32")
    cfg = cfg.replace(param_dtype=stored)
    if "dtype" not in overrides and stored == "float64":
      cfg = cfg.replace(dtype="float64")
  plan = _leaf_plan(cfg)
  names = _match_tensors(ckpt_dir, cfg, hf, table)
  abstract = _paths(jax.eval_shape(lambda: init(cfg, jax.random.key(0))))
  fresh = sorted(set(abstract) - set(plan))
  if set(plan) - set(abstract) or any(p not in [(n,) for n in _FRESH] for p in fresh):
    raise AssertionError(f"Plan and lobe params differ: {sorted(set(plan) ^ set(abstract))}.")
  shard_of = _check_shardings(shardings, abstract)
  fresh_vals = (_fresh_params(cfg, jax.random.key(0) if rng is None else rng, fresh)
                if fresh else {})
  sizes = _sizes(cfg)
  params = {}
  for path, sds in abstract.items():
    sharding = shard_of.get(path)
    if path not in plan:
      params[path] = (jax.device_put(fresh_vals[path], sharding) if sharding is not None
                      else fresh_vals[path])
      continue
    tm, layers = plan[path]
    want = ((len(layers),) if isinstance(layers, tuple) else ()) + tuple(
        sizes[f] for f in tm.lobe_axes)
    if want != sds.shape:
      raise AssertionError(f"{'/'.join(path)}: plan shape {want} != lobe shape {sds.shape}.")
    cb = (lambda index, tm=tm, layers=layers, sds=sds: _read_param(
        read, names, tm, layers, sizes, sds.shape, index, np.dtype(sds.dtype)))
    if sharding is None:
      params[path] = jnp.asarray(cb(tuple(slice(None) for _ in sds.shape)))
    else:
      params[path] = jax.make_array_from_callback(sds.shape, sharding, cb)
  return cfg, _nest(params)


def _check_shardings(shardings, abstract) -> dict:
  if shardings is None:
    return {}
  is_leaf = lambda x: x is None or isinstance(x, jax.sharding.Sharding)
  flat = _paths(shardings, is_leaf=is_leaf)
  missing, extra = sorted(set(abstract) - set(flat)), sorted(set(flat) - set(abstract))
  wrong = sorted(p for p, s in flat.items() if not is_leaf(s))
  if missing or extra or wrong:
    fmt = lambda ps: ["/".join(p) for p in ps]
    raise ValueError(f"`shardings` must have the params' structure: missing {fmt(missing)}, "
                     f"unexpected {fmt(extra)}, not a Sharding {fmt(wrong)}.")
  return {p: s for p, s in flat.items() if s is not None}


# ---------------------------------------------------------------------------------- export


def save_hf(out_dir: str, cfg: LobeConfig, params, *, base_config: dict | None = None,
            max_shard_bytes: int | None = None, dtype: str | None = None,
            tokenizer_from: str | None = None) -> list[str]:
  """Write params as a Hugging Face checkpoint (safetensors + config.json) in out_dir.

  A lobe imported with load_hf and exported unchanged gives the same tensors byte for byte.
  base_config: the source config.json dict (keeps bos/eos ids, max_position_embeddings...).
  dtype: cast on export (default: each param's dtype). tokenizer_from: a checkpoint directory
  whose tokenizer / generation files are copied. Returns the safetensors file names.
  """
  if cfg.score_head or cfg.score_input:
    raise ValueError("A Hugging Face causal-LM checkpoint has no score head/input: export "
                     "cfg.replace(score_head=False, score_input=False) with those params removed.")
  if not cfg.lm_head and not cfg.tie_embeddings:
    raise ValueError("This lobe has no lm_head (lm_head=False): a causal-LM checkpoint needs one.")
  hf = config_to_hf(cfg, base_config, dtype)
  plan = _leaf_plan(cfg)
  leaves = _paths(params)
  missing, extra = sorted(set(plan) - set(leaves)), sorted(set(leaves) - set(plan))
  if missing or extra:
    raise ValueError(f"params do not match cfg: missing {['/'.join(p) for p in missing]}, "
                     f"unexpected {['/'.join(p) for p in extra]}.")
  sizes = _sizes(cfg)
  names = _hf_names(cfg)

  def leaf(tm, i):
    return leaves[_leaf_path(cfg, tm, i)]

  def out_dtype(uses):
    return np.dtype(jnp.dtype(dtype) if dtype else leaf(*uses[0]).dtype)

  def produce(name):
    uses = names[name]
    tm0 = uses[0][0]
    flat = "".join(tm0.hf_axes)
    out = np.empty([sizes[f] for f in flat], out_dtype(uses))
    filled = 0
    for tm, i in uses:
      block = np.asarray(leaf(tm, i)[i] if cfg.scan_layers and i is not None else leaf(tm, i))
      want = tuple(sizes[f] for f in tm.lobe_axes)
      if block.shape != want:
        raise ValueError(f"{name}: lobe param has shape {block.shape}, cfg implies {want}.")
      sio.write_block(out, tm, block)
      filled += block.size
    if filled != out.size:
      raise AssertionError(f"{name}: export wrote {filled} of {out.size} elements.")
    return out.reshape(_hf_shape(tm0, sizes))

  specs = [(n, _hf_shape(u[0][0], sizes), out_dtype(u)) for n, u in names.items()]
  files = sio.write_checkpoint(out_dir, specs, produce, max_shard_bytes)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hf, f, indent=2, sort_keys=True)
  for name in TOKENIZER_FILES if tokenizer_from else ():
    if os.path.exists(os.path.join(tokenizer_from, name)):
      shutil.copyfile(os.path.join(tokenizer_from, name), os.path.join(out_dir, name))
  return files

