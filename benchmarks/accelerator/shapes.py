"""What the accelerator benchmark runs: lobe shapes, sizes per mode, the device's limits.

Full size (one H200): Pythia-410M- and Pythia-1B-shaped lobes (GPT-NeoX blocks, vocab
50304); `--tiny`: the test lobe (lobes.tiny("neox")) at a few tokens, for CPU and a first
sanity pass on a GPU.
"""
from __future__ import annotations

import dataclasses

from slnjax import lobes

NEOX = dict(vocab_size=50304, family="neox", rotary_pct=0.25, norm_eps=1e-5)
LOBES = {
    "410m": dict(NEOX, d_model=1024, n_layers=24, n_heads=16, d_ff=4096),  # Pythia-410M
    "1b": dict(NEOX, d_model=2048, n_layers=16, n_heads=8, d_ff=8192),  # Pythia-1B
    "70m": dict(NEOX, d_model=512, n_layers=6, n_heads=8, d_ff=2048),  # Pythia-70M
}

# Datasheet and measured limits of the machine the benchmark was written for; the run also
# measures its own matmul rate and copy bandwidth (section "device").
H200 = {"name": "NVIDIA H200", "bf16_dense_flops": 989e12, "bf16_measured_flops": 790e12,
        "hbm_bytes_per_s": 4.8e12, "hbm_measured_bytes_per_s": 4.3e12}


@dataclasses.dataclass(frozen=True)
class Sizes:
  train_lobes: tuple[str, ...]  # lobe names for the train step
  train_batch: int
  train_len: int  # tokens per sequence (prompt = a quarter of it)
  train_reps: int
  bptt_lobe: str
  bptt_tokens: tuple[int, ...]
  bptt_turn: int
  bptt_prompt: int
  bptt_reps: int
  decode_lobe: str
  decode_batches: tuple[int, ...]
  decode_new: int
  decode_turn: int
  decode_prompt: int
  decode_reps: int
  matmul_n: int  # side of the square bf16 matmul of the device probe
  copy_mib: int  # size of the array the bandwidth probe copies


FULL = Sizes(train_lobes=("410m", "1b"), train_batch=8, train_len=512, train_reps=5,
             bptt_lobe="410m", bptt_tokens=(32, 128), bptt_turn=32, bptt_prompt=64,
             bptt_reps=2, decode_lobe="410m", decode_batches=(1, 8, 64), decode_new=128,
             decode_turn=32, decode_prompt=64, decode_reps=2, matmul_n=8192, copy_mib=4096)
TINY = Sizes(train_lobes=("tiny",), train_batch=2, train_len=16, train_reps=2,
             bptt_lobe="tiny", bptt_tokens=(4,), bptt_turn=4, bptt_prompt=8, bptt_reps=2,
             decode_lobe="tiny", decode_batches=(1, 2), decode_new=8, decode_turn=4,
             decode_prompt=8, decode_reps=2, matmul_n=256, copy_mib=8)


def lobe(name: str, dtype: str, param_dtype: str, remat: str = "none") -> lobes.LobeConfig:
  """A lobe config by name ("410m", "1b", "70m", "tiny"), layers scanned."""
  kw = dict(dtype=dtype, param_dtype=param_dtype, remat=remat, scan_layers=True)
  if name == "tiny":
    return lobes.tiny("neox", **kw)
  if name not in LOBES:
    raise ValueError(f"unknown lobe {name!r}; choose from {sorted(LOBES)} or tiny.")
  return lobes.LobeConfig(**LOBES[name], **kw)
