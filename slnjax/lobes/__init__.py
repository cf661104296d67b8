"""Lobes: pure-functional decoder-only transformers (llama and neox block families)."""
from slnjax.lobes.config import LobeConfig, pythia_70m, tiny
from slnjax.lobes.layers import reading_cache_before_write
from slnjax.lobes.transformer import (Lobe, apply, cache_length, decode_config, embed_ids,
                                      embed_score, embedding_matrix, init, init_boxed,
                                      init_cache, laid_out, logical_axes, packed_weights,
                                      param_count, prepare_decoding, stacked_cache,
                                      with_layer_layout)
