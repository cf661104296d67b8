r"""python -m slnjax.main --config=experiments/tall_pretrained.py:left=/ckpt/pythia-70m --config.init_from=/tmp/pythia_init --workdir=/tmp/sln/tall_pretrained

A tall Strange-Loop Network whose two lobes start from pretrained Hugging Face checkpoints
(local directories in the Llama or GPT-NeoX/Pythia layout; see slnjax/convert/hf.py),
trained end to end through the soft-token dialogue (objective "bptt"). Both lobes write
turns; the right lobe also gets a fresh score head (its critic), and the left lobe a fresh
score-input embedding so that it can read the score. Convert the checkpoints first (once):

    python -m slnjax.import_hf --config=experiments/tall_pretrained.py:left=/ckpt/pythia-70m --out=/tmp/pythia_init

Argument (after the colon): comma-separated key=value pairs.
  left=DIR       checkpoint of the left lobe (generator). Required.
  right=DIR      checkpoint of the right lobe. Default: the same as left (two copies).
  tokenizer=T    task tokenizer: a tokenizer.json directory or "byte". Default: left's
                 tokenizer.json when it has one, else "byte".
  smoke=1        a few steps at batch 2 (tests; the lobes keep the checkpoint's shape).
The lobe shapes come from each checkpoint's config.json. Any field can still be overridden
on the command line, e.g. --config.model.loop.turn_len=16.
Run time and result: not measured yet (needs a pretrained checkpoint on disk).
"""
import os

from experiments import common

ARGS = ("left", "right", "tokenizer", "smoke")


def parse_arg(arg: str | None) -> dict[str, str]:
  """'left=/a,right=/b' -> {'left': '/a', 'right': '/b'}, with errors that name the key."""
  pairs = {}
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or not value:
      raise ValueError(f"Config argument {item!r} is not key=value (e.g. left=/ckpt/a).")
    if key not in ARGS:
      raise ValueError(f"Unknown config argument {key!r}; expected one of {ARGS}.")
    pairs[key] = value
  if "left" not in pairs:
    raise ValueError("Config argument lacks left=DIR: use e.g. "
                     "--config=experiments/<file>.py:left=/ckpt/a,right=/ckpt/b")
  return pairs


def pretrained(kind: str, arg: str | None, **overrides):
  """The config of an SLN of ``kind`` whose lobes are shaped like the checkpoints of arg."""
  a = parse_arg(arg)
  left, right = a["left"], a.get("right", a["left"])
  runtime = dict(dtype="float32", param_dtype="float32", scan_layers=True, remat="none")
  tokenizer = a.get("tokenizer") or (
      left if os.path.exists(os.path.join(left, "tokenizer.json")) else "byte")
  smoke = a.get("smoke", "0") not in ("0", "false", "")
  return common.experiment(
      kind, "bptt", pretrained=dict(left=left, right=right),
      task=dict(tokenizer=tokenizer, config="digits5", overrides=dict(
          name="pretrained_digits3", train_digits=(1, 3), longer_digits=(4, 5),
          num_train=256 if smoke else 20_000, num_test=32 if smoke else 512,
          num_test_longer=8 if smoke else 512)),
      batch_size=2 if smoke else 16, prompt_len=16,
      steps=2 if smoke else 2000, log_every=1 if smoke else 50,
      eval_every=0 if smoke else 500, checkpoint_every=0 if smoke else 500,
      model=dict(left=common.pretrained_lobe(left, **runtime),
                 right=common.pretrained_lobe(right, **runtime),
                 loop=dict(turn_len=4 if smoke else 32, max_turns=2 if smoke else 4,
                           threshold=0.9, mode="soft", bptt_depth=2)),
      optim=dict(left=dict(lr=1e-5, warmup_steps=100), right=dict(lr=1e-5, warmup_steps=100)),
      tau=dict(start=1e-3, end=1e-3), **overrides)


def get_config(arg: str | None = None):
  return pretrained("tall", arg)
