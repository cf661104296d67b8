"""Configuration of one lobe (a decoder-only transformer).

Two block families share one module:
- "llama": RMSNorm, RoPE on the full head, SwiGLU MLP, grouped-query attention, no biases.
- "neox":  LayerNorm with bias, partial rotary, parallel residual, GELU MLP, attention biases
           (GPT-NeoX / Pythia).
Parameter shapes follow the Hugging Face layouts up to a transpose/reshape, so that
pretrained weights can be imported (see docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

FAMILIES = ("llama", "neox")
DECODE_KERNELS = ("xla", "cpu_few_rows")
DECODE_LAYERS = ("auto", "scan", "unroll")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64,
           "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class LobeConfig:
  vocab_size: int = 260
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  n_kv_heads: int | None = None  # None: same as n_heads (no GQA)
  head_dim: int | None = None  # None: d_model // n_heads
  d_ff: int = 256
  family: str = "llama"
  rotary_pct: float | None = None  # None: 1.0 for llama, 0.25 for neox
  rope_theta: float = 10000.0
  rope_scaling: tuple[tuple[str, Any], ...] | None = None  # e.g. (("rope_type","llama3"),...)
  norm_eps: float = 1e-5
  tie_embeddings: bool = False
  parallel_residual: bool | None = None  # None: family default (neox True)
  attn_bias: bool | None = None  # None: family default (neox True)
  activation: str | None = None  # None: "silu" (llama, gated) / "gelu" (neox, exact erf)
  lm_head: bool = True
  score_head: bool = False
  score_input: bool = False  # learned embedding of a scalar score, fed back as a token
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"
  scan_layers: bool = True  # params stacked on a "layers" axis; compile time flat in depth
  remat: str = "none"  # "none" | "full" | "dots" (checkpoint policy for each block)
  # The products of a decoded token (at most 8 rows): "xla", or "cpu_few_rows" for the
  # hand-written CPU kernel of slnjax/kernels/few_rows.cc (float32, unrolled layers; the
  # dialogue loop packs the weights once per call, see lobes.prepare_decoding).
  decode_kernel: str = "xla"
  # The layer layout the dialogue loop decodes with when scan_layers=True: "auto" (unrolled
  # on a CPU backend, scanned elsewhere), "scan" or "unroll". The params are relaid out once
  # per call before the loop (lobes.prepare_decoding); gradients reach the scanned params.
  decode_layers: str = "auto"

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"LobeConfig.family={self.family!r}; expected one of {FAMILIES}.")
    if self.n_heads % self.kv_heads:
      raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.kv_heads}.")
    if self.head_dim is None and self.d_model % self.n_heads:
      raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                       "set head_dim explicitly.")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(f"LobeConfig.{name}={getattr(self, name)!r}; expected one of "
                         f"{sorted(_DTYPES)}.")
    if self.remat not in ("none", "full", "dots"):
      raise ValueError(f"LobeConfig.remat={self.remat!r}; expected 'none', 'full' or 'dots'.")
    if self.decode_kernel not in DECODE_KERNELS:
      raise ValueError(f"LobeConfig.decode_kernel={self.decode_kernel!r}; expected one of "
                       f"{DECODE_KERNELS}.")
    if self.decode_layers not in DECODE_LAYERS:
      raise ValueError(f"LobeConfig.decode_layers={self.decode_layers!r}; expected one of "
                       f"{DECODE_LAYERS}.")
    scan_decode = self.scan_layers and self.decode_layers == "scan"
    if self.decode_kernel == "cpu_few_rows" and (scan_decode or self.dtype != "float32"):
      raise ValueError("decode_kernel='cpu_few_rows' needs unrolled layers when decoding and "
                       f"dtype='float32' (got scan_layers={self.scan_layers}, decode_layers="
                       f"{self.decode_layers!r}, dtype={self.dtype!r}); set decode_layers="
                       "'auto' or 'unroll'.")
    if self.rotary_dim % 2:
      raise ValueError(f"rotary dim {self.rotary_dim} must be even (head_dim x rotary_pct).")

  @property
  def kv_heads(self) -> int:
    return self.n_kv_heads or self.n_heads

  @property
  def hd(self) -> int:
    return self.head_dim or self.d_model // self.n_heads

  @property
  def rotary_dim(self) -> int:
    pct = self.rotary_pct if self.rotary_pct is not None else (
        1.0 if self.family == "llama" else 0.25)
    return int(self.hd * pct)

  @property
  def is_parallel(self) -> bool:
    return self.parallel_residual if self.parallel_residual is not None else self.family == "neox"

  @property
  def has_attn_bias(self) -> bool:
    return self.attn_bias if self.attn_bias is not None else self.family == "neox"

  @property
  def act(self) -> str:
    return self.activation or ("silu" if self.family == "llama" else "gelu")

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return _DTYPES[self.param_dtype]

  def replace(self, **kw) -> "LobeConfig":
    return dataclasses.replace(self, **kw)

  @classmethod
  def from_dict(cls, d: dict) -> "LobeConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"Unknown lobe config keys {unknown}; valid keys: {sorted(names)}.")
    d = dict(d)
    if isinstance(d.get("rope_scaling"), dict):
      d["rope_scaling"] = tuple(sorted(d["rope_scaling"].items()))
    return cls(**d)


def pythia_70m(**kw) -> LobeConfig:
  """The Pythia-70M shape (70.4 M params): the benchmark lobe."""
  return LobeConfig(**{**dict(vocab_size=50304, d_model=512, n_layers=6, n_heads=8, d_ff=2048,
                              family="neox", rotary_pct=0.25, norm_eps=1e-5), **kw})


def tiny(family: str = "llama", **kw) -> LobeConfig:
  """A few-thousand-parameter lobe for tests and the CPU demo."""
  base = dict(vocab_size=260, d_model=32, n_layers=2, n_heads=4, d_ff=64, family=family)
  if family == "llama":
    base["n_kv_heads"] = 2
  return LobeConfig(**{**base, **kw})
