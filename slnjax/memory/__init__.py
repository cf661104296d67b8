"""Memory selection and retrieval lobes: a padded, masked memory bank; selectors that score
memories against a query; soft / Gumbel top-k / sampled (REINFORCE, PPO) selection; recency-
biased supervised pre-training and a distillation regulariser; prepending the selected
memories to a lobe's context. See docs/wide_and_memory.md."""
from slnjax.memory.bank import OVERFLOW, Bank, append, empty, from_arrays, with_keys
from slnjax.memory.encode import NgramEncoder, lobe_encode, ngram_hashes
from slnjax.memory.pretrain import distill_loss, pretrain_loss, recency_targets
from slnjax.memory.reader import (MemoryConfig, encode, ingest_prefix, init, logical_axes,
                                  prefix_embeds,
                                  prefix_ids, read, scores)
from slnjax.memory.selection import (MODES, Selection, plackett_luce_logp, ppo_loss,
                                     precision_at_k, recall_at_k, reinforce_loss, relaxed_topk,
                                     replay, select)
from slnjax.memory.selectors import KINDS, Selector
