"""Building blocks of a lobe: norms, rotary embeddings, attention with a KV cache, MLPs.

Shape suffixes: B batch, T query length, S cache length, D d_model, H query heads,
K kv heads, G = H // K (query heads per kv head), E head_dim, F d_ff.
Every parameter carries logical axis names; activations are constrained with them.
"""
from __future__ import annotations

import contextlib
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from slnjax.kernels import few_rows
from slnjax.lobes.config import LobeConfig

_NEG = -0.7 * float(jnp.finfo(jnp.float32).max)


def _param(mod: nn.Module, name: str, shape, axes, init, cfg: LobeConfig):
  return mod.param(name, nn.with_logical_partitioning(init, axes), shape, cfg.weight_dtype)


def acc_dtype(cfg: LobeConfig):
  """float32 for norms/softmax/rope, or float64 when the lobe computes in float64."""
  return jnp.promote_types(cfg.compute_dtype, jnp.float32)


def constrain(x, axes):
  return nn.with_logical_constraint(x, axes)


def upcast(dtype):
  """The dtype for numerically sensitive math: at least float32 (float64 stays float64)."""
  return jnp.promote_types(dtype, jnp.float32)


def product(mod: nn.Module, x_BTK, w_KN, name: str):
  """x_BTK @ w_KN [K,N]. A chunk of 2-8 rows (a decoded token at batch 2-8) runs on the
  few-rows CPU kernel when the lobe was given its packed weights (the "packed" collection
  holds `name`; see transformer.packed_weights); anything else is an XLA dot."""
  B, T, K = x_BTK.shape
  if few_rows.MIN_ROWS <= B * T <= few_rows.MAX_ROWS and mod.has_variable("packed", name):
    y_RN = few_rows.dense(x_BTK.reshape(B * T, K), w_KN, mod.get_variable("packed", name))
    return y_RN.reshape(B, T, w_KN.shape[1])
  return jnp.einsum("btk,kn->btn", x_BTK, w_KN)


class Norm(nn.Module):
  """RMSNorm (llama) or LayerNorm with bias (neox); computed in float32."""
  cfg: LobeConfig

  @nn.compact
  def __call__(self, x_BTD):
    cfg = self.cfg
    x = x_BTD.astype(upcast(x_BTD.dtype))
    scale = _param(self, "scale", (cfg.d_model,), ("embed",), nn.initializers.ones, cfg)
    if cfg.family == "llama":
      y = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + cfg.norm_eps)
      y = y * scale.astype(x.dtype)
    else:
      bias = _param(self, "bias", (cfg.d_model,), ("embed",), nn.initializers.zeros, cfg)
      mu = jnp.mean(x, axis=-1, keepdims=True)
      var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
      y = (x - mu) * jax.lax.rsqrt(var + cfg.norm_eps)
      y = y * scale.astype(x.dtype) + bias.astype(x.dtype)
    return y.astype(cfg.compute_dtype)


def rope_inv_freq(cfg: LobeConfig, dtype=jnp.float32):
  """Inverse frequencies [rotary_dim/2], with optional llama3 / linear scaling."""
  r = cfg.rotary_dim
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, r, 2, dtype=dtype) / r))
  sc = dict(cfg.rope_scaling or ())
  kind = sc.get("rope_type", sc.get("type"))
  if kind in (None, "default"):
    return inv
  if kind == "linear":
    return inv / sc["factor"]
  if kind == "llama3":
    factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
    old_len = sc["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = jnp.where(wavelen > old_len / lo, inv / factor, inv)
    smooth = (old_len / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
    return jnp.where(medium, smoothed, scaled)
  raise ValueError(f"Unsupported rope_scaling type {kind!r}; supported: default, linear, llama3.")


def apply_rope(x_BTNE, pos_BT, cfg: LobeConfig):
  """Rotate the first rotary_dim features of each head (half-split layout, as in HF)."""
  r = cfg.rotary_dim
  if r == 0:
    return x_BTNE
  dt = upcast(x_BTNE.dtype)
  ang_BTR = pos_BT[..., None].astype(dt) * rope_inv_freq(cfg, dt)
  ang_BTR = jnp.concatenate([ang_BTR, ang_BTR], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(ang_BTR), jnp.sin(ang_BTR)
  xr = x_BTNE[..., :r].astype(dt)
  x1, x2 = xr[..., : r // 2], xr[..., r // 2:]
  rot = xr * cos + jnp.concatenate([-x2, x1], axis=-1) * sin
  return jnp.concatenate([rot.astype(x_BTNE.dtype), x_BTNE[..., r:]], axis=-1)


_BEFORE_WRITE = [False]


@contextlib.contextmanager
def reading_cache_before_write():
  """While tracing inside this context, attention reads a given KV cache as it was given and
  does not build on the written one (the same values: a chunk reads only the positions
  before it). For a step recomputed against a loop-invariant final cache, whose written
  version is never needed (``appendonly.program_scan(reverse_context=...)``)."""
  _BEFORE_WRITE.append(True)
  try:
    yield
  finally:
    _BEFORE_WRITE.pop()


def write_cache(cache_BKSE, new_BTKE, start_B, mask_B=None):
  """Write each example's new entries at its own offset: cache[b, :, start[b]:start[b]+T].

  Examples with mask_B False keep their old entries (a halted example is never changed).
  The cache is heads-major [B,K,S,E] (the layout the attention products read in place).
  """
  new_BKTE = jnp.swapaxes(new_BTKE.astype(cache_BKSE.dtype), 1, 2)
  if mask_B is not None:
    T = new_BKTE.shape[2]
    old_BKTE = jax.vmap(lambda c, s: jax.lax.dynamic_slice_in_dim(c, s, T, axis=1))(
        cache_BKSE, start_B)
    new_BKTE = jnp.where(mask_B[:, None, None, None], new_BKTE, old_BKTE)
  upd = lambda c, n, s: jax.lax.dynamic_update_slice_in_dim(c, n, s, axis=1)
  return jax.vmap(upd)(cache_BKSE, new_BKTE, start_B)


class Attention(nn.Module):
  """Grouped-query causal self-attention; reads and writes an optional per-layer KV cache."""
  cfg: LobeConfig

  @nn.compact
  def __call__(self, x_BTD, pos_BT, k_cache_BKSE=None, v_cache_BKSE=None, start_B=None,
               mask_B=None):
    cfg = self.cfg
    D, H, K, E = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.hd
    init = nn.initializers.normal(0.02)
    wq = _param(self, "q", (D, H, E), ("embed", "heads", "kv"), init, cfg)
    wk = _param(self, "k", (D, K, E), ("embed", "kv_heads", "kv"), init, cfg)
    wv = _param(self, "v", (D, K, E), ("embed", "kv_heads", "kv"), init, cfg)
    wo = _param(self, "o", (H, E, D), ("heads", "kv", "embed"), init, cfg)
    dt = cfg.compute_dtype
    B, T = x_BTD.shape[:2]
    # Unrolled layers: two-dimensional products (the weights reshaped, a bitcast). With the
    # [D,H,E] weights in the product, XLA:CPU gave each one a transposed copy for the
    # backward pass, kept alive across the whole reverse token loop (24 MiB of the soft-token
    # BPTT step's 58 MiB for Pythia-70M). Scanned layers keep the 3-D products: there the 2-D
    # form made the layer scan carry each weight's cotangent in both shapes (+24 MiB).
    flat = not cfg.scan_layers

    def proj(w_DNE, name):
      if flat:
        _, N, _ = w_DNE.shape
        return product(self, x_BTD, w_DNE.astype(dt).reshape(D, N * E), name).reshape(
            B, T, N, E)
      return jnp.einsum("btd,dne->btne", x_BTD, w_DNE.astype(dt))
    q_BTHE, k_BTKE, v_BTKE = proj(wq, "q"), proj(wk, "k"), proj(wv, "v")
    if cfg.has_attn_bias:
      zeros = nn.initializers.zeros
      q_BTHE += _param(self, "q_bias", (H, E), ("heads", "kv"), zeros, cfg).astype(dt)
      k_BTKE += _param(self, "k_bias", (K, E), ("kv_heads", "kv"), zeros, cfg).astype(dt)
      v_BTKE += _param(self, "v_bias", (K, E), ("kv_heads", "kv"), zeros, cfg).astype(dt)
    q_BTHE = constrain(apply_rope(q_BTHE, pos_BT, cfg), ("batch", "length", "heads", "kv"))
    k_BTKE = constrain(apply_rope(k_BTKE, pos_BT, cfg), ("batch", "length", "kv_heads", "kv"))
    v_BTKE = constrain(v_BTKE, ("batch", "length", "kv_heads", "kv"))

    # The chunk attends to the cached positions before it (< start) and to its own keys and
    # values (causally), one softmax over both. The cached positions are read from the
    # written cache (the write is then in place: reading the unwritten one made XLA copy
    # every layer's cache twice per decoded token), or, under reading_cache_before_write(),
    # from the cache as given, which is then never updated: in the append-only reverse pass
    # (slnjax/appendonly.py) a recomputed step reads the loop-invariant final cache, and an
    # update made a fresh copy of it per token. The values read are the same either way.
    q_BTKGE = q_BTHE.reshape(B, T, K, H // K, E)
    f = upcast(dt)
    root_E = math.sqrt(E)
    cdt = dt if k_cache_BKSE is None else k_cache_BKSE.dtype  # own entries as the cache keeps them
    k_own_BTKE, v_own_BTKE = k_BTKE.astype(cdt).astype(dt), v_BTKE.astype(cdt).astype(dt)
    s_BKGTT = jnp.einsum("btkge,bske->bkgts", q_BTKGE, k_own_BTKE).astype(f) / root_E
    causal_TT = jnp.arange(T)[None, :] <= jnp.arange(T)[:, None]
    s_BKGTT = jnp.where(causal_TT, s_BKGTT, _NEG)
    if k_cache_BKSE is None or start_B is None:  # nothing cached before the chunk is read
      p_BKGTT = jax.nn.softmax(s_BKGTT, axis=-1).astype(dt)
      o_BTKGE = jnp.einsum("bkgts,bske->btkge", p_BKGTT, v_own_BTKE)
      if k_cache_BKSE is not None:
        zero_B = jnp.zeros((B,), jnp.int32)
        k_cache_BKSE = write_cache(k_cache_BKSE, k_BTKE, zero_B, mask_B)
        v_cache_BKSE = write_cache(v_cache_BKSE, v_BTKE, zero_B, mask_B)
    else:
      k_new_BKSE = write_cache(k_cache_BKSE, k_BTKE, start_B, mask_B)
      v_new_BKSE = write_cache(v_cache_BKSE, v_BTKE, start_B, mask_B)
      k_read_BKSE, v_read_BKSE = ((k_cache_BKSE, v_cache_BKSE) if _BEFORE_WRITE[-1]
                                  else (k_new_BKSE, v_new_BKSE))
      s_BKGTS = jnp.einsum("btkge,bkse->bkgts", q_BTKGE, k_read_BKSE.astype(dt)).astype(f)
      s_BKGTS = s_BKGTS / root_E
      old_BS = jnp.arange(k_cache_BKSE.shape[2])[None, :] < start_B[:, None]
      s_BKGTS = jnp.where(old_BS[:, None, None, None], s_BKGTS, _NEG)
      m_BKGT1 = jax.lax.stop_gradient(jnp.maximum(s_BKGTS.max(-1, keepdims=True),
                                                  s_BKGTT.max(-1, keepdims=True)))
      e_BKGTS, e_BKGTT = jnp.exp(s_BKGTS - m_BKGT1), jnp.exp(s_BKGTT - m_BKGT1)
      r_BKGT1 = 1.0 / (e_BKGTS.sum(-1, keepdims=True) + e_BKGTT.sum(-1, keepdims=True))
      o_BTKGE = (jnp.einsum("bkgts,bkse->btkge", (e_BKGTS * r_BKGT1).astype(dt),
                            v_read_BKSE.astype(dt))
                 + jnp.einsum("bkgts,bske->btkge", (e_BKGTT * r_BKGT1).astype(dt), v_own_BTKE))
      k_cache_BKSE, v_cache_BKSE = k_new_BKSE, v_new_BKSE
    if flat:
      out_BTD = product(self, o_BTKGE.reshape(B, T, H * E), wo.astype(dt).reshape(H * E, D),
                        "o")
    else:
      out_BTD = jnp.einsum("bthe,hed->btd", o_BTKGE.reshape(B, T, H, E), wo.astype(dt))
    if cfg.has_attn_bias:
      out_BTD += _param(self, "o_bias", (D,), ("embed",), nn.initializers.zeros, cfg).astype(dt)
    return out_BTD, k_cache_BKSE, v_cache_BKSE


class Mlp(nn.Module):
  """SwiGLU (llama) or GELU with biases (neox)."""
  cfg: LobeConfig

  @nn.compact
  def __call__(self, x_BTD):
    cfg = self.cfg
    D, F, dt = cfg.d_model, cfg.d_ff, cfg.compute_dtype
    init = nn.initializers.normal(0.02)
    up = _param(self, "up", (D, F), ("embed", "mlp"), init, cfg)
    down = _param(self, "down", (F, D), ("mlp", "embed"), init, cfg)
    h_BTF = product(self, x_BTD, up.astype(dt), "up")
    if cfg.family == "llama":
      gate = _param(self, "gate", (D, F), ("embed", "mlp"), init, cfg)
      g_BTF = product(self, x_BTD, gate.astype(dt), "gate")
      h_BTF = _activation(cfg.act, g_BTF) * h_BTF
    else:
      h_BTF += _param(self, "up_bias", (F,), ("mlp",), nn.initializers.zeros, cfg).astype(dt)
      h_BTF = _activation(cfg.act, h_BTF)
    h_BTF = constrain(h_BTF, ("batch", "length", "mlp"))
    out_BTD = product(self, h_BTF, down.astype(dt), "down")
    if cfg.family != "llama":
      out_BTD += _param(self, "down_bias", (D,), ("embed",), nn.initializers.zeros, cfg).astype(dt)
    return out_BTD


def _activation(name: str, x):
  if name == "silu":
    return jax.nn.silu(x)
  if name == "gelu":
    return jax.nn.gelu(x, approximate=False)
  if name in ("gelu_new", "gelu_tanh", "gelu_pytorch_tanh"):
    return jax.nn.gelu(x, approximate=True)
  if name == "relu":
    return jax.nn.relu(x)
  raise ValueError(f"Unsupported activation {name!r}; use silu, gelu, gelu_new or relu.")


class Block(nn.Module):
  """One transformer block. Carry-style signature so that it can be scanned over layers."""
  cfg: LobeConfig

  @nn.compact
  def __call__(self, x_BTD, k_cache, v_cache, pos_BT, start_B, mask_B):
    cfg = self.cfg
    attn_in = Norm(cfg, name="attn_norm")(x_BTD)
    a_BTD, k_cache, v_cache = Attention(cfg, name="attn")(attn_in, pos_BT, k_cache, v_cache,
                                                           start_B, mask_B)
    if cfg.is_parallel:
      m_BTD = Mlp(cfg, name="mlp")(Norm(cfg, name="mlp_norm")(x_BTD))
      x_BTD = x_BTD + a_BTD + m_BTD
    else:
      x_BTD = x_BTD + a_BTD
      x_BTD = x_BTD + Mlp(cfg, name="mlp")(Norm(cfg, name="mlp_norm")(x_BTD))
    x_BTD = constrain(x_BTD, ("batch", "length", "embed"))
    return x_BTD, (k_cache, v_cache)
