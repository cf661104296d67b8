"""Memories as a prefix of the dialogue lobes' contexts.

    read = dialogue.read(mcfg, mparams, bank, lobes_, prompt_ids_BP, prompt_len_B, key, tau)
    d = loop.rollout(spec, pl, pr, prompt_ids_BP, prompt_len_B, key, tau,
                     memory_prefix=read.prefix)

One read per dialogue: the query is the prompt; the selection (one per example, shared by
the reading lobes) is embedded in each reading lobe's own input embedding
(``reader.prefix_embeds``, [B, k * L, D]). ``loop.prefill`` writes that prefix into the lobe's
cache before the prompt, at positions 0 .. k * L - 1, so the prompt starts at k * L and
every later turn of the lobe attends to the memories; ``DialogueSpec.cache_lengths`` and
``loop.left_context`` count the prefix. A lobe not in ``MemoryConfig.lobes`` gets no prefix
and is computed exactly as without memory.

Gradients: ``soft`` and ``gumbel_st`` reach the selector (and the n-gram encoder) through
the prefix embeddings; ``sample`` has none there, and ``read.sel.logp_B`` (the Plackett-Luce
log-prob of the choice) is the score-function term. ``forced`` = (index_BJ, valid_BJ)
replays a recorded choice under the current selector (one-hot prefix, its new log-prob):
REINFORCE and PPO replays.
"""
from __future__ import annotations

from typing import NamedTuple

import jax

from slnjax import lobes as lobes_lib
from slnjax.memory import reader, selection
from slnjax.memory.bank import Bank


class Read(NamedTuple):
  sel: selection.Selection
  scores_BC: jax.Array
  prefix: dict  # lobe name -> [B, k * L, D] in that lobe's input embedding


def read(mcfg: reader.MemoryConfig, mparams, bank: Bank, lobes_: dict, query_ids_BQ,
         query_len_B, key, tau, forced=None) -> Read:
  """Scores the bank against the query, selects k items (``mcfg.mode``, or the replay of
  ``forced``), and embeds the choice for every lobe named in ``mcfg.lobes``.

  ``lobes_``: {name: (LobeConfig, params)} for the lobes of the dialogue; a reading lobe
  that is missing is an error. A "lobe" encoder encodes with the first reading lobe."""
  missing = [n for n in mcfg.lobes if lobes_.get(n) is None]
  if missing:
    raise ValueError(f"MemoryConfig.lobes={mcfg.lobes} names {missing}, but this dialogue "
                     f"has no such lobe (lobes: {sorted(n for n in lobes_ if lobes_[n])}).")
  if query_ids_BQ.shape[0] != bank.mask_BC.shape[0]:
    raise ValueError(f"The memory bank has {bank.mask_BC.shape[0]} rows but the prompt batch "
                     f"{query_ids_BQ.shape[0]}: one bank per example.")
  enc_lobe = lobes_[mcfg.lobes[0]] if mcfg.encoder == "lobe" else None
  tau = mcfg.tau if mcfg.tau is not None else tau
  if forced is None:
    sel, s_BC = reader.read(mcfg, mparams, bank, query_ids_BQ, query_len_B, key, tau=tau,
                            lobe=enc_lobe)
  else:
    s_BC = reader.scores(mcfg, mparams, bank, query_ids_BQ, query_len_B, enc_lobe)
    sel = selection.replay(s_BC, bank.mask_BC, forced[0], forced[1], mcfg.temperature)
  prefix = {n: reader.prefix_embeds(sel, bank, lobes_lib.embedding_matrix(*lobes_[n]))
            for n in mcfg.lobes}
  return Read(sel, s_BC, prefix)
