r"""python -m slnjax.main --config=experiments/lateralized_pretrained.py:left=/ckpt/pythia-70m --config.init_from=/tmp/pythia_init_lat --workdir=/tmp/sln/lateralized_pretrained

A lateralized Strange-Loop Network from pretrained Hugging Face checkpoints: the left lobe
(generator) writes turns; the right lobe (critic) reads the prompt and the left lobe's turn
and only scores it. The critic starts from a pretrained LM with its LM head dropped and a
fresh score head; the left lobe gets a fresh score-input embedding to read the score.
Convert the checkpoints first (once; the critic has no LM head, so this is a different
init_from directory than tall_pretrained.py's):

    python -m slnjax.import_hf --config=experiments/lateralized_pretrained.py:left=/ckpt/pythia-70m --out=/tmp/pythia_init_lat

Argument (after the colon): as experiments/tall_pretrained.py (left=DIR required, right=DIR
the critic's checkpoint, default the same; tokenizer=...; smoke=1).
Run time and result: not measured yet (needs a pretrained checkpoint on disk).
"""
import importlib.util
import os


def _tall_module():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tall_pretrained.py")
  spec = importlib.util.spec_from_file_location("tall_pretrained", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str | None = None):
  return _tall_module().pretrained("lateralized", arg, objective=dict(critic_weight=0.5))
