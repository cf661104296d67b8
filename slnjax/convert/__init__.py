"""Checkpoint conversion, one layer above the lobes: Hugging Face safetensors checkpoints
(`hf.py`, read and written tensor by tensor through `safetensors_io.py`) and llama GGUF files
(`gguf_import.py`, dequantized into `hf.load_arrays`). Tokenizers are loaded in one place,
`slnjax.data.load_tokenizer` (a chat template: `gguf_import.chat_tokenizer`)."""
from slnjax.convert.hf import (RUNTIME_FIELDS, TOKENIZER_FILES, config_from_hf, config_to_hf,
                               load_arrays, load_hf, read_hf_config, save_hf)
