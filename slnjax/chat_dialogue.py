r"""A text dialogue between two pretrained chat lobes (GGUF files), turn by turn.

    python -m slnjax.dialogue --gguf smollm2 --prompt "What is 23+58?" [--gguf_right SPEC]
                              [--turns T] [--max_new N] [--temperature X] [--seed S]

The left lobe answers the prompt as the chat template's assistant; the right lobe, the critic,
is shown the question and that answer (as its user message, under a reviewer's system
prompt) and writes a verdict that starts with "Correct" or "Wrong". A verdict that is not
"Correct" goes back to the left lobe as the next user message, and the left lobe answers
again, with the whole conversation in its context. Each turn stops at the template's
end-of-turn token (the file's eos, `<|im_end|>` for SmolLM2) or after --max_new tokens.
The dialogue halts when the critic says "Correct" or after --turns turns.

A SPEC is a .gguf path or "smollm2" (convert/gguf_import.py). Both lobes share one copy of the
weights when they name the same file. Decoding is greedy (--temperature 0, the default) or
sampled, with our KV cache; each turn re-reads the conversation in one prefill.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from slnjax.convert import gguf_import
from slnjax.lobes import apply, init_cache

LEFT_SYSTEM = "You are a careful assistant. Answer the question briefly."
RIGHT_SYSTEM = ("You are a strict reviewer. You check an answer to a question. Reply with "
                "'Correct' or 'Wrong' first, then one short sentence why.")
_BUCKET = 64  # prompt lengths are rounded up to this: few shapes, few compiles
_CACHE = 512  # the KV cache's length (or more, in steps of it, for longer conversations)


@dataclasses.dataclass
class ChatLobe:
  """A pretrained lobe with its tokenizer, jitted prefill and one-token step."""
  spec: str
  cfg: object
  params: object
  tok: object

  def __post_init__(self):
    cfg = self.cfg
    self._prefill = jax.jit(lambda p, ids, cache, start, at: apply(
        cfg, p, ids=ids, cache=cache, start=start, logits_at=at))
    self._step = jax.jit(lambda p, ids, cache, start: apply(
        cfg, p, ids=ids, cache=cache, start=start))

  @property
  def end_ids(self) -> set[int]:
    return {i for i in (self.tok.eos_token_id, self.tok.convert_tokens_to_ids("<|im_end|>"))
            if isinstance(i, int) and i >= 0}

  def chat_ids(self, messages: list[dict]) -> list[int]:
    out = self.tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)

  def reply(self, messages: list[dict], max_new: int, temperature: float, rng) -> str:
    """The assistant's next message: tokens until the end-of-turn token or max_new."""
    ids = self.chat_ids(messages)
    T = len(ids)
    P = -(-T // _BUCKET) * _BUCKET
    S = -(-(P + max_new) // _CACHE) * _CACHE
    buf = np.zeros((1, P), np.int32)
    buf[0, :T] = ids  # the padding's cache entries lie after T: overwritten before being read
    out = self._prefill(self.params, buf, init_cache(self.cfg, 1, S), jnp.zeros(1, jnp.int32),
                        jnp.asarray([T - 1], jnp.int32))
    logits, new, end = out["logits_BV"][0], [], self.end_ids
    for k in range(max_new):
      tok = _pick(np.asarray(logits, np.float64), temperature, rng)
      if tok in end:
        break
      new.append(tok)
      if k + 1 == max_new:
        break
      out = self._step(self.params, jnp.asarray([[tok]], jnp.int32), out["cache"],
                       jnp.asarray([T + k], jnp.int32))
      logits = out["logits_BTV"][0, 0]
    return self.tok.decode(new, skip_special_tokens=True).strip()


def _pick(logits, temperature, rng) -> int:
  if not temperature:
    return int(np.argmax(logits))
  z = logits / temperature
  p = np.exp(z - z.max())
  return int(rng.choice(len(p), p=p / p.sum()))


def load_lobes(spec: str, spec_right: str | None = None) -> tuple[ChatLobe, ChatLobe]:
  """Left and right ChatLobes (unrolled layers: faster decoding on a CPU); one copy of the
  weights when both name the same file."""
  def one(s):
    cfg, params = gguf_import.load_gguf(s, scan_layers=False)
    return ChatLobe(s, cfg, params, gguf_import.chat_tokenizer(s))
  left = one(spec)
  right = left if spec_right in (None, spec) else one(spec_right)
  return left, right


def accepted(verdict: str) -> bool:
  """The critic's verdict says the answer is right (its first word is "Correct")."""
  words = verdict.strip().lstrip("*#'\" ").split()
  return bool(words) and words[0].strip(".,:;!*'\"").lower() in ("correct", "yes", "right")


def run(left: ChatLobe, right: ChatLobe, prompt: str, turns: int = 2, max_new: int = 48,
        temperature: float = 0.0, seed: int = 0) -> dict:
  """The dialogue: {"turns": [{"left", "right", "accepted"}], "halted", "tokens", "seconds"}."""
  rng = np.random.default_rng(seed)
  t0 = time.perf_counter()
  convo = [{"role": "system", "content": LEFT_SYSTEM}, {"role": "user", "content": prompt}]
  out, halted = [], "turn limit"
  for n in range(turns):
    answer = left.reply(convo, max_new, temperature, rng)
    convo.append({"role": "assistant", "content": answer})
    review = [{"role": "system", "content": RIGHT_SYSTEM},
              {"role": "user", "content": f"Question: {prompt}\nAnswer: {answer}\n"
                                          "Is the answer correct?"}]
    verdict = right.reply(review, max_new, temperature, rng)
    ok = accepted(verdict)
    out.append({"left": answer, "right": verdict, "accepted": ok})
    if ok:
      halted = "the critic accepted the answer"
      break
    if n + 1 < turns:
      convo.append({"role": "user", "content": f"A reviewer says: {verdict}\n"
                                               "Answer the question again."})
  return {"turns": out, "halted": halted, "seconds": time.perf_counter() - t0}


def format_dialogue(left: ChatLobe, right: ChatLobe, prompt: str, r: dict) -> str:
  lines = [f"chat lobes: left {left.spec}, right {right.spec} "
           f"({left.cfg.n_layers} layers, d_model {left.cfg.d_model})", f"prompt: {prompt!r}"]
  for n, t in enumerate(r["turns"]):
    lines.append(f"turn {n + 1}: left {t['left']!r}")
    lines.append(f"        right {t['right']!r}")
  lines.append(f"halted: {r['halted']} after {len(r['turns'])} turn(s) in {r['seconds']:.1f} s")
  return "\n".join(lines)
