r"""python -m slnjax.main --config=experiments/tall_pretrained.py:left=/ckpt/pythia-70m,right=/ckpt/pythia-70m

A tall Strange-Loop Network whose two lobes start from pretrained Hugging Face checkpoints
(local directories in the Llama or GPT-NeoX/Pythia layout; see slnjax/lobes/convert.py).
Both lobes write turns; the right lobe also gets a fresh score head (its critic), and the left
lobe a fresh score-input embedding so that it can read the score.

Argument (after the colon): comma-separated key=value pairs.
  left=DIR    checkpoint of the left lobe (generator). Required.
  right=DIR   checkpoint of the right lobe. Default: the same as left (two copies).
Any field can still be overridden on the command line, e.g. --config.loop.turn_len=16.
"""
from ml_collections import config_dict


def parse_arg(arg: str | None, required=("left",), optional=("right",)) -> dict[str, str]:
  """'left=/a,right=/b' -> {'left': '/a', 'right': '/b'}, with errors that name the key."""
  pairs = {}
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or not value:
      raise ValueError(f"Config argument {item!r} is not key=value (e.g. left=/ckpt/a).")
    if key not in required + optional:
      raise ValueError(f"Unknown config argument {key!r}; expected {required + optional}.")
    pairs[key] = value
  missing = [k for k in required if k not in pairs]
  if missing:
    raise ValueError(f"Config argument lacks {missing}: use e.g. "
                     f"--config=experiments/<file>.py:left=/ckpt/a,right=/ckpt/b")
  return pairs


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  ckpt = parse_arg(arg)
  config = config_dict.ConfigDict()
  config.model = "tall"  # both lobes write turns ("lateralized": the right lobe only scores)
  config.left_checkpoint = ckpt["left"]
  config.right_checkpoint = ckpt.get("right", ckpt["left"])
  # slnjax.lobes.convert.load_hf overrides (convert.RUNTIME_FIELDS); architecture comes from
  # each checkpoint's config.json.
  config.left_lobe = config_dict.ConfigDict(dict(
      dtype="float32", param_dtype="float32", scan_layers=True, remat="none",
      score_input=True))
  config.right_lobe = config_dict.ConfigDict(dict(
      dtype="float32", param_dtype="float32", scan_layers=True, remat="none",
      score_head=True, lm_head=True))
  # slnjax.loop.LoopConfig fields.
  config.loop = config_dict.ConfigDict(dict(
      turn_len=32,  # m: tokens per turn
      max_turns=4,  # the IDL limit
      threshold=0.9,  # halt when the right lobe's score >= threshold
      mode="soft",  # soft-token mode: soft_tokens.MODES
      bptt_depth=2,  # truncated BPTT: gradients through the last k turns (None: all)
  ))
  config.tau = 1e-3  # soft-token temperature (the paper's value)
  return config
