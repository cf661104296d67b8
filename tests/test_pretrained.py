"""experiments/{tall,lateralized}_pretrained.py train from a local Hugging Face directory
after `python -m slnjax.import_hf` turned it into an init_from workdir."""
import importlib.util
import os

import jax
import numpy as np
import pytest

from slnjax import checkpoint, config as cfg, import_hf, train
from slnjax import build, finalize

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_experiment(name, arg):
  path = os.path.join(ROOT, "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def save_tiny_hf(path):
  """A random 2-layer GPT-NeoX (vocab 300 >= the byte tokenizer's 260) in HF's layout."""
  hf = transformers.GPTNeoXConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=256, rotary_pct=0.25)
  torch.manual_seed(0)
  model = transformers.GPTNeoXForCausalLM(hf)
  model.save_pretrained(path)
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hf") / "tiny-neox")
  return path, save_tiny_hf(path)


def _import_and_train(name, tiny_hf, tmp_path):
  hf_dir, tensors = tiny_hf
  config = load_experiment(name, f"left={hf_dir},smoke=1")
  assert config.model.left.d_model == 32 and config.model.left.family == "neox"
  params = import_hf.import_params(config)
  import_hf.write(str(tmp_path / "init"), config, params)
  # The written checkpoint holds the HF weights (the scanned layers stacked on axis 0).
  stored = checkpoint.load_params(str(tmp_path / "init"), jax.eval_shape(lambda: params))
  for lobe in ("left", "right"):
    np.testing.assert_array_equal(stored[lobe]["embedding"], tensors["gpt_neox.embed_in.weight"])
  np.testing.assert_array_equal(stored["left"]["layers"]["mlp"]["down"][1],
                                tensors["gpt_neox.layers.1.mlp.dense_4h_to_h.weight"].T)
  with pytest.raises(ValueError, match="init_from is empty"):
    train.train(config, str(tmp_path / "no_init"))
  with config.unlocked():
    config.init_from = str(tmp_path / "init")
  out = train.train(config, str(tmp_path / "run"))
  assert out["step"] == 2 and np.isfinite(out["loss"])
  return config


def test_tall_pretrained_trains_from_a_local_hf_directory(tiny_hf, tmp_path):
  config = _import_and_train("tall_pretrained", tiny_hf, tmp_path)
  assert config.model.kind == "tall" and config.pretrained.right == tiny_hf[0]


@pytest.mark.slow
def test_lateralized_pretrained_trains_from_a_local_hf_directory(tiny_hf, tmp_path):
  config = _import_and_train("lateralized_pretrained", tiny_hf, tmp_path)
  assert config.model.kind == "lateralized" and config.objective.critic_weight == 0.5


def test_pretrained_configs_load_and_a_mismatch_is_named(tiny_hf, tmp_path):
  hf_dir, _ = tiny_hf
  lat = load_experiment("lateralized_pretrained", f"left={hf_dir}")
  assert build.build_model(lat).spec.right.lm_head is False
  with pytest.raises(ValueError, match="lacks left=DIR"):
    load_experiment("tall_pretrained", "right=/x")
  config = load_experiment("tall_pretrained", f"left={hf_dir},smoke=1")
  with config.unlocked():
    config.model.right.d_ff = 48
  with pytest.raises(ValueError, match=r"config.model.right does not match .*d_ff"):
    import_hf.import_params(finalize.finalize(config))


def test_import_hf_fills_a_llama_config_from_a_llama_checkpoint(tmp_path):
  """experiments/llama8b_tall.py:smoke lobes from a Llama checkpoint of the same shape (the
  docstring's import command at smoke size); a checkpoint of another shape is refused."""
  hf = transformers.LlamaConfig(
      vocab_size=260, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, intermediate_size=64, rms_norm_eps=1e-5,
      max_position_embeddings=8192,
      rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                           low_freq_factor=1.0, high_freq_factor=4.0,
                           original_max_position_embeddings=8192))
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(hf)
  model.save_pretrained(str(tmp_path / "llama"))
  config = load_experiment("llama8b_tall", "smoke")
  with config.unlocked():
    config.pretrained.left = config.pretrained.right = str(tmp_path / "llama")
  params = import_hf.import_params(config)
  np.testing.assert_array_equal(params["right"]["embedding"],
                                model.state_dict()["model.embed_tokens.weight"].numpy())
  with config.unlocked():
    config.model.left.n_kv_heads = 4
  with pytest.raises(ValueError, match="config.model.left does not match"):
    import_hf.import_params(config)
