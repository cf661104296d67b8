r"""python -m slnjax.main --config=experiments/lateralized_pretrained.py:left=/ckpt/pythia-70m,right=/ckpt/pythia-70m

A lateralized tall Strange-Loop Network from pretrained Hugging Face checkpoints: the left lobe
(generator) writes turns; the right lobe (critic) reads the prompt and the left lobe's turn and
only scores it. The critic starts from a pretrained LM with its LM head dropped and a fresh
score head; the left lobe gets a fresh score-input embedding to read the score.

Argument (after the colon): comma-separated key=value pairs.
  left=DIR    checkpoint of the left lobe (generator). Required.
  right=DIR   checkpoint the critic starts from. Default: the same as left.
Any field can still be overridden on the command line, e.g. --config.loop.threshold=0.8.
"""
import importlib.util
import os

from ml_collections import config_dict


def _tall_module():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tall_pretrained.py")
  spec = importlib.util.spec_from_file_location("tall_pretrained", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  config = _tall_module().get_config(arg)
  config.model = "lateralized"
  config.right_lobe.lm_head = False  # a critic: score head only
  config.right_lobe.score_head = True
  config.loop.threshold = 0.9
  return config
