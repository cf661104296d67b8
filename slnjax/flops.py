"""Inference FLOPs of the lobes and of an inner dialogue, counted from their shapes.

    lobe_forward_flops(cfg, n_tokens, context_len=0)   one forward pass over a chunk
    dialogue_flops(model, dialogue, prompt_len_B)      [B] per example of a dialogue

What is counted (a FLOP is a multiply or an add; a product of [m,k] by [k,n] is 2·m·n·k):
- per token and layer: the q, k, v and o projections and the MLP (two matrices, or three for
  the gated "llama" MLP);
- attention: the scores q·k and the weighted values p·v, 2·2·n_heads·head_dim per attended
  position and layer. ``causal=True`` (the default, the *useful* work): token i of a chunk
  written after ``context_len`` cached positions attends to context_len + i + 1 positions.
  ``causal=False``: every token of the chunk is charged context_len + n_tokens positions,
  what a dense masked kernel computes (what XLA's cost analysis counts for a prompt);
- the LM head (2·d_model·vocab) on the rows whose logits are used (``logit_rows``), and the
  score head (2·d_model) where the lobe has one;
- soft tokens (loop modes other than greedy / hard): the weights over the vocabulary times
  each reading lobe's embedding, 2·vocab·d_model per emitted token and reader.
Not counted: elementwise work (norms, rotary, softmax, activations, residuals, sampling;
about 1% of the total at d_model 256), embedding look-ups (gathers), a memory selector,
and a dialogue's batch padding: an example is charged for its own turns, not for the
turns it waits, frozen, while others in its batch go on (``rollout`` stops at the batch's
last halt).

A dialogue (loop/turn.py) for an example with prompt length p and T turns used, turn length m:
the prefill (the left lobe over p tokens, logits at the last one; an encoder over p tokens;
the right lobe, if any, over p tokens, of which only the KV cache is read, so its last
block counts only its k and v projections, and nothing when it shares the left lobe's
weights and config: the same computation); then per turn: the left lobe's m one-token passes
(each at its growing cache length, logits used); lateralized: the critic reads the m tokens
after its prompt cache (score head); tall: the right lobe reads the m tokens (logits of the
last used), writes m one-token passes, and the left lobe reads them back (logits of the
last used); with score feedback: the left lobe reads one score token (logits used). A
writer's last pass of a turn emits a token that is replaced before anyone reads it (when
the writer reads the other lobe's turn or the score next): only its k and v are counted.
Work whose result is never read is what XLA removes from the compiled program; with it
left out, the count is within 1-2% of XLA's cost analysis of a whole one-turn dialogue
(tests/test_flops.py). This mirrors loop/turn.py step by step; keep them in step.
The lobes' attention reads a cache's whole buffer under a mask (prompt padding and the
positions not yet written included), so the compiled program does more attention work than
counted here when caches are long; the count is what the dialogue needs, not that padding.
"""
from __future__ import annotations

import functools

import numpy as np

from slnjax import soft_tokens
from slnjax.lobes.config import LobeConfig


def _per_token_layer(cfg: LobeConfig) -> int:
  """Matmul FLOPs of one token through one block (projections + MLP)."""
  D, H, K, E, F = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.hd, cfg.d_ff
  proj = 2 * D * H * E + 2 * 2 * D * K * E + 2 * H * E * D
  mlp = 2 * D * F * (3 if cfg.family == "llama" else 2)
  return proj + mlp


def lobe_forward_flops(cfg: LobeConfig, n_tokens: int, context_len: int = 0, *,
                       logit_rows: int | None = None, causal: bool = True,
                       cache_only: bool = False) -> int:
  """FLOPs of one lobe forward pass over a chunk of ``n_tokens`` written after
  ``context_len`` cached positions (see the module docstring for what is counted).
  ``logit_rows``: rows whose logits are computed (None: every row when cfg.lm_head).
  ``cache_only``: only the KV cache it writes is used (no logits, no score), so the last
  block needs only its k and v projections (XLA drops the rest)."""
  n, c = int(n_tokens), int(context_len)
  if n < 0 or c < 0:
    raise ValueError(f"n_tokens={n} and context_len={c} must be >= 0.")
  if cache_only:
    if logit_rows:
      raise ValueError("cache_only passes use no logits (logit_rows must be 0 or None).")
    kv = n * 2 * 2 * cfg.d_model * cfg.kv_heads * cfg.hd
    if cfg.n_layers == 0:
      return 0
    rest = lobe_forward_flops(cfg.replace(n_layers=cfg.n_layers - 1, lm_head=False,
                                          score_head=False), n, c, causal=causal)
    return rest + kv
  if logit_rows is None:
    logit_rows = n if cfg.lm_head else 0
  if logit_rows and not cfg.lm_head:
    raise ValueError("logit_rows > 0 but this lobe has no LM head (lm_head=False).")
  attended = n * c + n * (n + 1) // 2 if causal else n * (c + n)
  per_layer = n * _per_token_layer(cfg) + 4 * cfg.n_heads * cfg.hd * attended
  flops = cfg.n_layers * per_layer + int(logit_rows) * 2 * cfg.d_model * cfg.vocab_size
  if cfg.score_head and n:
    flops += 2 * cfg.d_model
  return flops


def _emit(spec, writer: LobeConfig, reader: LobeConfig | None) -> int:
  """A soft token's embeddings: weights [V] times the writer's and the reader's E [V,D]."""
  if spec.loop.mode in soft_tokens.HARD_MODES:
    return 0
  widths = writer.d_model + (reader.d_model if reader is not None else 0)
  return 2 * writer.vocab_size * widths


def _writes(spec, writer: LobeConfig, reader: LobeConfig | None, cache_len: int,
            overwritten: bool) -> int:
  """A lobe writing a turn of m tokens: m one-token passes at its growing cache length,
  each emitting the next token. ``overwritten``: the last pass's emission (the next turn's
  first token) is replaced before it is read (the lobe reads the other's turn or the score
  first), so only that pass's KV-cache entries are used."""
  m, F = spec.loop.turn_len, lobe_forward_flops
  full = m - 1 if overwritten else m
  f = sum(F(writer, 1, cache_len + i, logit_rows=1) for i in range(full))
  f += full * _emit(spec, writer, reader)
  if overwritten:
    f += F(writer, 1, cache_len + m - 1, cache_only=True)
  return f


@functools.lru_cache(maxsize=4096)
def _example(model, turns: int, prompt_len: int, prefix_left: int, prefix_right: int) -> int:
  spec = model.spec
  lc, rc, m = spec.left, spec.right, spec.loop.turn_len
  F = lobe_forward_flops
  p = int(prompt_len)
  f = 0
  if getattr(model, "encoder", None) is not None:
    f += F(model.encoder, p, 0, logit_rows=0)
  f += F(lc, prefix_left + p, 0, logit_rows=1) + _emit(spec, lc, rc)
  if rc is not None and not (getattr(model, "shared", False) and rc == lc):
    f += F(rc, prefix_right + p, 0, cache_only=True)  # shared: the left prefill's (CSE)
  len_l, len_r = prefix_left + p, prefix_right + p
  for _ in range(int(turns)):
    f += _writes(spec, lc, rc, len_l, overwritten=spec.tall or spec.feeds_score)
    len_l += m
    if rc is not None and not spec.tall:
      f += F(rc, m, prefix_right + p, logit_rows=0)
    if spec.tall:
      f += F(rc, m, len_r, logit_rows=1) + _emit(spec, rc, lc)
      len_r += m
      f += _writes(spec, rc, lc, len_r, overwritten=True)
      len_r += m
      f += F(lc, m, len_l, logit_rows=1) + _emit(spec, lc, rc)
      len_l += m
    if spec.feeds_score:
      f += F(lc, 1, len_l, logit_rows=1) + _emit(spec, lc, rc)
      len_l += 1
  return f


def dialogue_flops(model, dialogue, prompt_len_B, *, prefix_len: tuple[int, int] = (0, 0)
                   ) -> np.ndarray:
  """Inference FLOPs of each example's dialogue, [B] float64.

  ``model``: an sln.SLN (dialogue kinds). ``dialogue``: a loop.Dialogue (its ``turns_B``
  is read), a rollout dict with "turns_B", or the turns used [B] / an int. ``prompt_len_B``:
  each example's prompt length [B] (or an int). ``prefix_len``: (left, right) memory-prefix
  lengths, when the model reads a memory (the selector itself is not counted)."""
  if not hasattr(model, "spec"):
    raise ValueError(f"dialogue_flops counts dialogue kinds (an sln.SLN); got "
                     f"{type(model).__name__}.")
  turns = getattr(dialogue, "turns_B", None)
  if turns is None and isinstance(dialogue, dict):
    turns = dialogue["turns_B"]
  turns = np.asarray(dialogue if turns is None else turns).astype(np.int64)
  plen = np.asarray(prompt_len_B).astype(np.int64)
  turns, plen = np.broadcast_arrays(turns, plen)
  if (turns < 0).any() or (plen < 0).any():
    raise ValueError("turns and prompt lengths must be >= 0.")
  out = [_example(model, int(t), int(p), int(prefix_len[0]), int(prefix_len[1]))
         for t, p in zip(turns.ravel(), plen.ravel())]
  return np.asarray(out, np.float64).reshape(turns.shape)
