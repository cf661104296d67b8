"""The peer: PyTorch + transformers (GPTNeoXForCausalLM of the same shape, random weights)."""
from __future__ import annotations

import numpy as np

from slnjax import convert
from slnjax.lobes.config import LobeConfig


def build(cfg: LobeConfig, seed: int = 0):
  """A GPT-NeoX model with cfg's shape, fp32, random weights, eval mode (no dropout)."""
  import torch
  import transformers
  if cfg.family != "neox":
    raise ValueError(f"The peer is GPTNeoXForCausalLM: the lobe must be family 'neox', got "
                     f"{cfg.family!r}.")
  hf = {k: v for k, v in convert.config_to_hf(cfg).items()
        if k not in ("architectures", "model_type")}
  torch.manual_seed(seed)
  return transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**hf)).float().eval()


def _detach_cache(past):
  for layer in past.layers:
    layer.keys, layer.values = layer.keys.detach(), layer.values.detach()


class SavedBytes:
  """Counts the bytes autograd saves for the backward pass (unique storages, parameters
  excluded): the activation memory proper, independent of the allocator's RSS behaviour."""

  def __init__(self, model):
    self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    self.seen, self.bytes = set(), 0

  def hooks(self):
    import torch

    def pack(t):
      st = t.untyped_storage()
      ptr = st.data_ptr()
      if ptr not in self.params and ptr not in self.seen:
        self.seen.add(ptr)
        self.bytes += st.nbytes()
      return t
    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)


def soft_bptt_step(model, ids, target, n_tokens: int, turn_len: int, tau: float,
                   depth: int | None, saved: SavedBytes | None = None):
  """Forward + backward of sum_i log p(target_i) over the last turn of n_tokens soft tokens.

  Each token is w = softmax(logits / tau) fed back as inputs_embeds = w @ E with the KV cache
  (the computation slnjax's soft-token unroll does). depth k: gradient through the last k
  turns only (earlier turns run without autograd; the cache is detached at the cut). The
  prompt's logits are computed at its last position only (`logits_to_keep=1`, as slnjax's
  prefill does). `saved`: counts the bytes saved for backward.
  """
  import contextlib

  import torch
  with saved.hooks() if saved is not None else contextlib.nullcontext():
    return _soft_bptt_step(model, ids, target, n_tokens, turn_len, tau, depth)


def _soft_bptt_step(model, ids, target, n_tokens, turn_len, tau, depth):
  import torch
  E = model.get_input_embeddings().weight
  n_turns = n_tokens // turn_len
  first = 0 if depth is None else max(0, n_turns - depth) * turn_len
  last_turn = n_tokens - turn_len
  model.zero_grad(set_to_none=True)
  with torch.set_grad_enabled(first == 0):
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
  past, logits = out.past_key_values, out.logits[:, -1]
  loss = torch.zeros(())
  for j in range(n_tokens):
    if j == first and first > 0:
      _detach_cache(past)
      logits = logits.detach()
    with torch.set_grad_enabled(j >= first):
      if j >= last_turn:
        logp = torch.log_softmax(logits, -1)
        loss = loss + logp.gather(1, target[:, j - last_turn, None]).sum()
      e = torch.softmax(logits / tau, -1) @ E
      out = model(inputs_embeds=e[:, None], past_key_values=past, use_cache=True)
      past, logits = out.past_key_values, out.logits[:, -1]
  loss.backward()
  return float(loss.detach())


def grad_bytes(model) -> int:
  return sum(p.numel() * p.element_size() for p in model.parameters())


def generate(model, ids, new_tokens: int):
  """Greedy `generate` of exactly new_tokens tokens (no early stop). Returns the new ids."""
  import torch
  with torch.no_grad():
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         pad_token_id=0, eos_token_id=None)
  new = out[:, ids.shape[1]:]
  if new.shape[1] != new_tokens:
    raise RuntimeError(f"generate returned {new.shape[1]} new tokens, expected {new_tokens}.")
  return new


def as_torch(a):
  import torch
  return torch.from_numpy(np.asarray(a).astype(np.int64))
