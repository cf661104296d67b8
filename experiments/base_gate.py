r"""python -m slnjax.main --config experiments/base_gate.py --workdir /tmp/sln/base_gate

The base gate (issue 20, row A): can our SFT train a single lobe to add? Reversed,
zero-padded 1-3-digit addition ("012+345=" -> "7530", the sum least-significant digit
first; task config `reversed3`: 200k training problems, 2,000 validation, 2,000 test),
teacher-forced cross-entropy on the answer tokens only, a 2-layer d_model 64 lobe, greedy
decoding. Pass: >= 99% exact match in every digit-length bucket of the test split, 3 seeds.
Learning curve on the validation split (every 250 steps); the test split once, at the end.
Run time and result: see docs/results.md ("Base gate") and docs/results/base_gate.json.
Seeds: --config.seed=1, --config.seed=2.
Smoke version (tests): --config experiments/base_gate.py:smoke
"""
from slnjax import config

GATE = dict(
    task=dict(config="reversed3", eval_split="validation"),
    batch_size=128, prompt_len=12, steps=3000, log_every=100, eval_every=250,
    checkpoint_every=1000,
    model=dict(left=dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=256),
               loop=dict(turn_len=6, max_turns=1, mode="greedy", threshold=None)),
    optim=dict(left=dict(lr=1e-3, warmup_steps=100, schedule="cosine", end_lr_frac=0.1,
                         weight_decay=0.0, clip_norm=1.0)),
    eval=dict(num_batches=-1, batch_size=500, transcripts=3, mode="greedy",
              final_split="test"))


def get_config(arg=None):
  if arg not in (None, "", "smoke"):
    raise ValueError(f"Unknown experiment argument {arg!r}; use ':smoke' or nothing.")
  if arg == "smoke":
    small = config.deep_update(GATE, dict(
        task=dict(overrides=dict(name="gate_smoke", num_train=256, num_validation=16,
                                 num_test=16, num_test_longer=8)),
        batch_size=8, steps=4, log_every=2, eval_every=2, checkpoint_every=0,
        model=dict(left=dict(d_model=16, d_ff=32)),
        eval=dict(num_batches=1, batch_size=8, transcripts=1)))
    return config.experiment("single", "sft", **small)
  return config.experiment("single", "sft", **GATE)
