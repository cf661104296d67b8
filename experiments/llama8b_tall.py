r"""python -m slnjax.aot --config experiments/llama8b_tall.py --topology v5p-128

A tall SLN whose two lobes have the Llama-3-8B shape (8.03 B parameters each: vocab 128256,
d_model 4096, 32 layers, 32 heads / 8 kv heads, d_ff 14336), trained end to end through the
inner dialogue (objective "bptt", soft tokens, truncated BPTT over the last 2 turns, the
append-only reverse pass). bfloat16 compute, float32 parameters and AdamW moments, layers
scanned and fully rematerialised, everything FSDP-sharded over all chips.
Arguments: none (v5p-128, global batch 64); "v5e" (v5e-256, global batch 256); "smoke"
(tiny lobes of the same structure: CPU tests, the AOT test on v5e:2x2, launch/local.sh).

Fit check (python -m slnjax.aot, libtpu 0.0.42, compiled on a 2-core CPU host):
  v5p-128: mesh (1, 64, 1); per device arguments 2.80 GiB, temporaries 19.48 GiB,
    peak 22.69 of 95.74 GiB: fits (24%); 3.66e+15 FLOPs/step (>= 0.125 s at peak);
    compiled in 160 s (2026-12-01).
  v5e-256 (:v5e): mesh (1, 256, 1); per device arguments 0.70 GiB, temporaries 14.60 GiB,
    peak 15.49 of 15.75 GiB: fits (98%); 1.46e+16 FLOPs/step (>= 0.290 s at peak);
    compiled in 258 s (2026-12-01).
  Re-measured 2026-12-05 after the vocab-parallel embedding lookup (docs/scaling.md
  section 9): v5p-128 temporaries 14.17 GiB, peak 17.37 GiB (18%), 7.59e+15 FLOPs/step.
  The v5e figures above were not re-measured; the lookup adds ~3 GiB of temporaries per
  device under pure FSDP, so the v5e config (98% before) very likely no longer fits.

A real run needs weights and a tokenizer: turn a local Llama-3-8B checkpoint into an
init_from workdir (on a host with memory for both lobes; the lobes are checked against its
config.json), then train from it:
  python -m slnjax.import_hf --config experiments/llama8b_tall.py \
      --config.pretrained.left=DIR --config.pretrained.right=DIR --out OUT
  ... --config.init_from=OUT --config.task.tokenizer=DIR
"""
from experiments import common

LLAMA3_8B = dict(
    vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336,
    family="llama", rope_theta=500000.0, norm_eps=1e-5,
    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=8192),
    dtype="bfloat16", param_dtype="float32", scan_layers=True, remat="full")
SMOKE = dict(vocab_size=260, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
             dtype="float32", param_dtype="float32", remat="none")
LOOP = dict(turn_len=32, max_turns=4, mode="soft", bptt_depth=2, bptt_impl="appendonly")


def get_config(arg: str | None = None):
  if arg not in (None, "", "v5e", "smoke"):
    raise ValueError(f"Unknown argument {arg!r}: use none (v5p-128), 'v5e' (v5e-256) or "
                     "'smoke' (tiny lobes).")
  smoke = arg == "smoke"
  lobe = dict(LLAMA3_8B, **SMOKE) if smoke else LLAMA3_8B
  return common.experiment(
      "tall", "bptt", smoke=smoke,
      batch_size={"smoke": 8, "v5e": 256}.get(arg, 64), prompt_len=8 if smoke else 128,
      steps=20 if smoke else 10000, log_every=5 if smoke else 50,
      eval_every=0 if smoke else 1000, checkpoint_every=0 if smoke else 1000,
      model=dict(left=dict(lobe), right=dict(lobe),
                 loop=dict(LOOP, turn_len=4, max_turns=2) if smoke else LOOP),
      optim=dict(left=dict(lr=1e-5, warmup_steps=100), right=dict(lr=1e-5, warmup_steps=100)),
      tau=dict(start=1.0, end=0.1, schedule="exponential"),
      mesh=dict(ici=(1, -1, 1), dcn=(1, 1, 1)))
