"""chat_dialogue.py: turns stop at the end-of-turn token, the verdict goes back as text, and
`python -m slnjax.dialogue --gguf` answers mistakes with one error line. The real SmolLM2
dialogue runs in tests/test_docs.py (README's "Two SmolLM2 lobes in two commands")."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import chat_dialogue, dialogue
from slnjax.lobes import LobeConfig, apply, init


class _Tok:
  """A stand-in tokenizer: a message list becomes its characters' codes (mod 64)."""
  eos_token_id = None

  def apply_chat_template(self, messages, tokenize, add_generation_prompt):
    return [ord(c) % 64 for m in messages for c in m["content"]]

  def convert_tokens_to_ids(self, token):
    return None

  def decode(self, ids, skip_special_tokens):
    return " ".join(map(str, ids))


def test_reply_is_greedy_and_stops_at_end_of_turn():
  cfg = LobeConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                   scan_layers=False)
  params = init(cfg, jax.random.key(0))
  lobe = chat_dialogue.ChatLobe("tiny", cfg, params, _Tok())
  msgs = [{"role": "user", "content": "12+34="}]
  ids = lobe.chat_ids(msgs)
  seq = list(ids)
  for _ in range(6):  # greedy by full forwards
    seq.append(int(jnp.argmax(apply(cfg, params, ids=jnp.asarray([seq]))["logits_BTV"][0, -1])))
  new = seq[len(ids):]
  assert lobe.reply(msgs, 6, 0.0, None) == " ".join(map(str, new))
  lobe.tok.eos_token_id = new[3]  # the end-of-turn token ends the turn, unprinted
  assert lobe.reply(msgs, 6, 0.0, None) == " ".join(map(str, new[:new.index(new[3])]))


class _Scripted:
  def __init__(self, lines):
    self.lines, self.seen = list(lines), []

  def reply(self, messages, max_new, temperature, rng):
    self.seen.append(list(messages))  # the conversation as it stood
    return self.lines.pop(0)


def test_verdict_goes_back_as_text_until_the_critic_accepts():
  left, right = _Scripted(["143", "81"]), _Scripted(["Wrong: 23+58 is not 143.", "Correct."])
  r = chat_dialogue.run(left, right, "What is 23+58?", turns=3)
  assert [t["left"] for t in r["turns"]] == ["143", "81"] and r["turns"][1]["accepted"]
  assert "accepted" in r["halted"] and len(r["turns"]) == 2
  assert "Answer: 143" in right.seen[0][-1]["content"]  # the critic reads the answer
  assert left.seen[1][-2] == {"role": "assistant", "content": "143"}
  assert "Wrong: 23+58 is not 143." in left.seen[1][-1]["content"]  # and the left its verdict
  assert chat_dialogue.accepted("**Correct**, 81.") and not chat_dialogue.accepted("Incorrect")


@pytest.mark.parametrize("args,says", [
    (("--gguf", "nowhere.gguf"), "neither a .gguf file"),
    (("--gguf", "smollm2", "--workdir", "w"), "either --workdir"),
    (("--gguf", "smollm2", "--max_new", "0"), "--max_new 0"),
])
def test_bad_input_is_one_error_line(capsys, args, says):
  with pytest.raises(SystemExit) as e:
    dialogue.main(["--prompt", "1+1=", *args])
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.startswith("error: ") and says in err
  assert err.count("\n") == 1
