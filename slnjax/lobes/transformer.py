"""A decoder-only transformer lobe, used only as a pure function of its parameters.

    params = init(cfg, rng)
    out = apply(cfg, params, ids=ids_BT)                      # full forward, causal
    cache = init_cache(cfg, batch=B, length=S)
    out = apply(cfg, params, embeds=e_BTD, cache=cache, start=start_B)   # incremental

`out` is a dict: "hidden_BTD", "logits_BTV" (if cfg.lm_head), "score_logit_B" (if
cfg.score_head: read at each example's last valid position), and "cache" (if one was given).
With `logits_at` ([B] positions within the chunk) the LM head runs only there and `out`
holds "logits_BV" instead of "logits_BTV" (a prefill needs one row of logits, not T).
The cache is {"k": ..., "v": ...}, heads-major: one [L,B,K,S,E] array each when the layers are
scanned, a tuple of L arrays [B,K,S,E] when they are unrolled (each layer then reads and
writes its own buffer in place; slicing one layer out of a stacked array and stacking the
results back copied the whole cache at every token). ``stacked_cache`` gives either as
[L,B,K,S,E]. A chunk of T inputs is written at positions start[b] .. start[b]+T-1 of
example b and attends causally to everything before.
Entries at positions after a query are never read, so a cache is append-only: the cache at
any earlier step equals the final cache with the later positions masked (see slnjax/loop/).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from slnjax.lobes.config import LobeConfig
from slnjax.kernels import few_rows
from slnjax.lobes.layers import Block, Norm, _param, constrain, product

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Lobe(nn.Module):
  cfg: LobeConfig

  def setup(self):
    cfg = self.cfg
    self.embedding = _param(self, "embedding", (cfg.vocab_size, cfg.d_model),
                            ("vocab", "embed"), nn.initializers.normal(0.02), cfg)
    block = Block
    if cfg.remat != "none":
      block = nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      self.layers = nn.scan(
          block, variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=(0, 0, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.n_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")
    else:
      self.blocks = [block(cfg, name=f"layer_{i}") for i in range(cfg.n_layers)]
    self.final_norm = Norm(cfg)
    if cfg.lm_head and not cfg.tie_embeddings:
      self.lm_head = _param(self, "lm_head", (cfg.d_model, cfg.vocab_size), ("embed", "vocab"),
                            nn.initializers.normal(0.02), cfg)
    if cfg.score_head:
      self.score_w = _param(self, "score_w", (cfg.d_model,), ("embed",),
                            nn.initializers.normal(0.02), cfg)
      self.score_b = _param(self, "score_b", (), (), nn.initializers.zeros, cfg)
    if cfg.score_input:
      self.score_in_w = _param(self, "score_in_w", (cfg.d_model,), ("embed",),
                               nn.initializers.normal(0.02), cfg)
      self.score_in_b = _param(self, "score_in_b", (cfg.d_model,), ("embed",),
                               nn.initializers.normal(0.02), cfg)

  def embed_ids(self, ids_BT):
    # A vocab-parallel lookup: the table is gathered over embed (as FSDP gathers any weight)
    # and stays split over vocab; each vocab shard gathers its rows and XLA sums the shards,
    # giving batch-sharded rows. Reading the table split over embed gave rows split over
    # embed, which XLA could only re-split over batch by replicating them ("Involuntary full
    # rematerialization", in the step and in its transpose). tests/test_sharded_embedding.py
    # Cast first: the gather moves (and the gradient sums) compute-dtype rows, as for any
    # other weight cast for its product.
    table_VD = constrain(self.embedding.astype(self.cfg.compute_dtype), ("vocab", None))
    x_BTD = jnp.take(table_VD, ids_BT, axis=0)
    return constrain(x_BTD, ("batch", "length", "embed"))

  def embed_score(self, s_B):
    """A learned embedding of a scalar score in [0, 1], differentiable in the score."""
    if not self.cfg.score_input:
      raise ValueError("This lobe has no score input; set LobeConfig.score_input=True.")
    e_BD = s_B[:, None] * self.score_in_w + self.score_in_b
    return e_BD.astype(self.cfg.compute_dtype)

  def __call__(self, ids_BT=None, embeds_BTD=None, cache=None, start_B=None, lengths_B=None,
               write_mask_B=None, logits_at_B=None):
    cfg = self.cfg
    if (ids_BT is None) == (embeds_BTD is None):
      raise ValueError("Pass exactly one of ids [B,T] or embeds [B,T,D].")
    x_BTD = self.embed_ids(ids_BT) if embeds_BTD is None else embeds_BTD.astype(cfg.compute_dtype)
    if x_BTD.ndim != 3 or x_BTD.shape[-1] != cfg.d_model:
      raise ValueError(f"Lobe inputs have shape {x_BTD.shape}; expected [B,T] ids or "
                       f"[B,T,{cfg.d_model}] embeddings.")
    B, T, _ = x_BTD.shape
    # start None: the chunk starts at position 0, so its attention reads no cached position
    # (the blocks get None and skip that product; a zeros array would only be masked out).
    pos_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32)[None, :], (B, T))
    if start_B is not None:
      pos_BT = start_B[:, None] + pos_BT
    x_BTD = constrain(x_BTD, ("batch", "length", "embed"))
    if cache is not None:
      _check_cache(cfg, cache, B)
    k, v = (cache["k"], cache["v"]) if cache is not None else (None, None)
    if cfg.scan_layers:  # k, v: [L,B,K,S,E]
      x_BTD, (k, v) = self.layers(x_BTD, k, v, pos_BT, start_B, write_mask_B)
    else:  # k, v: L x [B,K,S,E]
      ks, vs = [], []
      for i, blk in enumerate(self.blocks):
        x_BTD, (kc, vc) = blk(x_BTD, None if k is None else k[i], None if v is None else v[i],
                              pos_BT, start_B, write_mask_B)
        ks.append(kc)
        vs.append(vc)
      k, v = tuple(ks), tuple(vs)
    h_BTD = self.final_norm(x_BTD)
    out = {"hidden_BTD": h_BTD}
    if cfg.lm_head:
      w_DV = (self.embedding.T if cfg.tie_embeddings else self.lm_head).astype(cfg.compute_dtype)
      w_DV = constrain(w_DV, (None, "vocab"))  # gathered over embed, split over vocab
      if logits_at_B is None:
        logits_BTV = product(self, h_BTD, w_DV, "lm_head")
        out["logits_BTV"] = constrain(logits_BTV, ("batch", "length", "vocab"))
      else:
        if logits_at_B.shape != (B,):
          raise ValueError(f"logits_at has shape {logits_at_B.shape}; expected [B] = [{B}].")
        h_BD = jnp.take_along_axis(h_BTD, logits_at_B.astype(jnp.int32)[:, None, None], 1)[:, 0]
        out["logits_BV"] = constrain(jnp.einsum("dv,bd->bv", w_DV, h_BD), ("batch", "vocab"))
    if cfg.score_head:
      last_B = (jnp.full((B,), T, jnp.int32) if lengths_B is None else lengths_B) - 1
      h_BD = jnp.take_along_axis(h_BTD, last_B[:, None, None], axis=1)[:, 0]
      f = jnp.promote_types(cfg.compute_dtype, jnp.float32)
      logit_B = h_BD.astype(f) @ self.score_w.astype(f) + self.score_b.astype(f)
      out["score_logit_B"] = logit_B
    if cache is not None:
      out["cache"] = {"k": k, "v": v}
    return out


def _check_cache(cfg: LobeConfig, cache, batch: int):
  """A clear error for a cache of another lobe, batch or layer layout."""
  layer_ok = lambda sh: len(sh) == 4 and (sh[0], sh[1], sh[3]) == (batch, cfg.kv_heads, cfg.hd)
  for name in ("k", "v"):
    x = cache.get(name) if isinstance(cache, dict) else None
    if isinstance(x, (tuple, list)):
      got = [tuple(c.shape) for c in x]
      ok = not cfg.scan_layers and len(got) == cfg.n_layers and all(map(layer_ok, got))
    elif hasattr(x, "shape"):
      got = tuple(x.shape)
      ok = cfg.scan_layers and len(got) == 5 and got[0] == cfg.n_layers and layer_ok(got[1:])
    else:
      got, ok = type(x).__name__, False
    if not ok:
      want = (f"[{cfg.n_layers},{batch},{cfg.kv_heads},S,{cfg.hd}]" if cfg.scan_layers else
              f"a tuple of {cfg.n_layers} arrays [{batch},{cfg.kv_heads},S,{cfg.hd}]")
      raise ValueError(f"The KV cache's {name!r} is {got}; this lobe (scan_layers="
                       f"{cfg.scan_layers}, batch {batch}) expects {want}. Build it with "
                       "lobes.init_cache(cfg, batch, length).")


@functools.lru_cache(maxsize=None)
def module(cfg: LobeConfig) -> Lobe:
  return Lobe(cfg)


def _check_cfg(cfg):
  if not isinstance(cfg, LobeConfig):
    raise TypeError(f"Expected a LobeConfig, got {type(cfg).__name__}.")


def init_boxed(cfg: LobeConfig, rng):
  """Parameters wrapped in flax Partitioned boxes (carry logical axis names)."""
  _check_cfg(cfg)
  return _init_boxed(cfg, rng)


@functools.partial(jax.jit, static_argnums=0)
def _init_boxed(cfg: LobeConfig, rng):
  # Compiled, once per config: flax's init traces a whole forward pass, which run eagerly
  # dispatched every op (and recompiled the layer scan) at each call; here XLA drops the
  # forward (only the parameters are returned).
  return module(cfg).init(rng, jnp.zeros((1, 2), jnp.int32))["params"]


def init(cfg: LobeConfig, rng):
  """Plain parameter pytree (no boxes)."""
  return nn.meta.unbox(init_boxed(cfg, rng))


def logical_axes(cfg: LobeConfig):
  """Pytree (same structure as params) of PartitionSpecs over logical axis names."""
  boxed = jax.eval_shape(lambda r: init_boxed(cfg, r), jax.random.key(0))
  return nn.get_partition_spec(boxed)


def with_layer_layout(params, scan_layers: bool):
  """The same lobe params for scanned layers ("layers", stacked on axis 0) or unrolled ones
  ("layer_0", "layer_1", ...): e.g. a scanned training checkpoint decoded with unrolled
  layers (faster on CPU, see benchmarks/ANALYSIS.md)."""
  if ("layers" in params) == scan_layers:
    return params
  rest = {k: v for k, v in params.items() if k != "layers" and not k.startswith("layer_")}
  if scan_layers:
    names = sorted((k for k in params if k.startswith("layer_")), key=lambda k: int(k[6:]))
    if not names:
      raise ValueError("These lobe params have neither 'layers' (scan_layers=True) nor "
                       "'layer_0', 'layer_1', ... (scan_layers=False); pass a slnjax.lobes "
                       "pytree.")
    return {**rest, "layers": jax.tree.map(lambda *xs: jnp.stack(xs),
                                           *[params[k] for k in names])}
  n = int(jax.tree.leaves(params["layers"])[0].shape[0])
  return {**rest, **{f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], params["layers"])
                     for i in range(n)}}


def param_count(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def laid_out(cfg: LobeConfig, params) -> LobeConfig:
  """`cfg` with the layer layout of `params` (scanned "layers" or unrolled "layer_i"): what
  prepare_decoding's relaid-out params are applied with."""
  scanned = "layers" in params
  return cfg if cfg.scan_layers == scanned else cfg.replace(scan_layers=scanned)


def decode_config(cfg: LobeConfig) -> LobeConfig:
  """The config a lobe decodes with: cfg.decode_layers resolved ("auto": unrolled layers on
  a CPU backend, where the layer scan's per-token slices of the weights and caches cost
  about half of the decoding time; scanned elsewhere, for compile time)."""
  unroll = cfg.decode_layers == "unroll" or (
      cfg.decode_layers == "auto" and jax.default_backend() == "cpu")
  return cfg.replace(scan_layers=False) if cfg.scan_layers and unroll else cfg


def prepare_decoding(cfg: LobeConfig, params):
  """What a decoding loop reads, made once per call before the loop: (params in the layout
  of decode_config(cfg), packed_weights for the few-rows CPU kernel or None). The relayout
  is a stack/slice, so gradients reach the caller's (scanned) params unchanged."""
  dcfg = decode_config(cfg)
  params = with_layer_layout(params, dcfg.scan_layers)
  return params, packed_weights(dcfg, params)


def apply(cfg: LobeConfig, params, *, ids=None, embeds=None, cache=None, start=None,
          lengths=None, write_mask=None, logits_at=None, packed=None):
  """Forward pass. `start` [B] int: where each example's chunk goes in `cache` (None: at 0,
  and nothing cached is read). `write_mask` [B] bool: examples whose cache must stay
  unchanged are False. The layer layout follows `params` (see laid_out).
  `logits_at` [B] int: compute the logits only at these chunk positions ("logits_BV").
  `packed`: packed_weights(cfg, params) (or None), for chunks of at most 8 rows."""
  cfg = laid_out(cfg, params)
  variables = {"params": params} if packed is None else {"params": params, "packed": packed}
  return module(cfg).apply(variables, ids, embeds, cache, start, lengths, write_mask,
                           logits_at)


def packed_weights(cfg: LobeConfig, params):
  """The weights of the lobe's products packed for the few-rows CPU kernel
  (slnjax/kernels/few_rows.py), a tree mirroring `params` for `apply(packed=...)`; None when
  cfg.decode_kernel is "xla". Compute it once, outside a decoding loop (XLA does not hoist
  the packing out of a while loop). No gradient flows through it: the kernel's products
  take theirs from `params`. Products whose width is not a multiple of 8 stay XLA dots."""
  if cfg.decode_kernel == "xla":
    return None
  reason = few_rows.why_unavailable()
  if reason is not None:
    raise RuntimeError(f"decode_kernel='cpu_few_rows' cannot run here: {reason}. Use "
                       "decode_kernel='xla'.")
  if "layers" in params:
    raise ValueError("decode_kernel='cpu_few_rows' needs unrolled-layer params; get them "
                     "from lobes.prepare_decoding(cfg, params).")
  dt = cfg.compute_dtype

  def pk(w, shape=None):
    w = jax.lax.stop_gradient(w).astype(dt)
    w = w if shape is None else w.reshape(shape)
    return few_rows.pack(w) if w.shape[1] % few_rows.TILE == 0 else None

  D, H, K, E = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.hd
  out = {}
  for i in range(cfg.n_layers):
    p = params[f"layer_{i}"]
    attn = {n: pk(p["attn"][n], (D, (H if n == "q" else K) * E)) for n in ("q", "k", "v")}
    attn["o"] = pk(p["attn"]["o"], (H * E, D))
    mlp = {n: pk(p["mlp"][n]) for n in ("up", "gate", "down") if n in p["mlp"]}
    out[f"layer_{i}"] = {"attn": attn, "mlp": mlp}
  if cfg.lm_head:
    out["lm_head"] = pk(params["embedding"].T if cfg.tie_embeddings else params["lm_head"])
  return _prune(out)


def _prune(tree):
  """Drops None leaves and empty dicts (flax would take a None entry as a packed weight)."""
  out = {}
  for k, v in tree.items():
    v = _prune(v) if isinstance(v, dict) else v
    if v is not None and not (isinstance(v, dict) and not v):
      out[k] = v
  return out


def embed_ids(cfg: LobeConfig, params, ids_BT):
  return module(laid_out(cfg, params)).apply({"params": params}, ids_BT, method=Lobe.embed_ids)


def embed_score(cfg: LobeConfig, params, s_B):
  return module(laid_out(cfg, params)).apply({"params": params}, s_B, method=Lobe.embed_score)


def embedding_matrix(cfg: LobeConfig, params):
  """The input embedding E [V, D] (what a soft token is multiplied with)."""
  return params["embedding"].astype(cfg.compute_dtype)


LAYER_CACHE_AXES = ("batch", "kv_heads", "cache_length", "kv")
STACKED_CACHE_AXES = ("layers",) + LAYER_CACHE_AXES


def init_cache(cfg: LobeConfig, batch: int, length: int, dtype=None):
  """An empty cache of `length` positions (see the module docstring for its layout)."""
  dtype = dtype or cfg.compute_dtype
  layer = (batch, cfg.kv_heads, length, cfg.hd)
  if cfg.scan_layers:
    return {k: jnp.zeros((cfg.n_layers,) + layer, dtype) for k in ("k", "v")}
  return {k: tuple(jnp.zeros(layer, dtype) for _ in range(cfg.n_layers)) for k in ("k", "v")}


def cache_logical_axes(cfg: LobeConfig):
  """PartitionSpecs over logical axis names for `init_cache(cfg, ...)`, same structure."""
  if cfg.scan_layers:
    return {k: PartitionSpec(*STACKED_CACHE_AXES) for k in ("k", "v")}
  return {k: (PartitionSpec(*LAYER_CACHE_AXES),) * cfg.n_layers for k in ("k", "v")}


def stacked_cache(cache):
  """{"k", "v"} as [L,B,K,S,E] arrays, whichever layout the cache has (for inspection)."""
  return {k: jnp.stack(x) if isinstance(x, (tuple, list)) else x for k, x in cache.items()}


def cache_length(cache) -> int:
  """S, the number of positions a cache holds."""
  return int(jax.tree.leaves(cache)[0].shape[-2])
