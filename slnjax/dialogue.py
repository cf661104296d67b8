r"""Watch the inner dialogue on your own prompt, turn by turn, from a checkpoint.

    python -m slnjax.dialogue --workdir W --prompt "12+34=" [--turns T] [--temperature X]
                              [--step N] [--seed S]

Restores the checkpoint at step N (default: the latest) of W/checkpoints with the config
saved next to it, encodes the prompt with the task's tokenizer (bos + the text, as the
input pipeline does), runs the loop once and prints each turn: the left lobe's decoded text,
the right lobe's turn (tall SLNs) and the critic's score (when the model has one); then why
the loop halted and the inference FLOPs of the dialogue (slnjax/flops.py). --turns: the
loop's turn limit (default: the model's max_turns); --temperature: the sampling temperature
of the loop's token mode (default: the config's; 0: greedy, the most likely token).
With --gguf SPEC instead of --workdir: a text dialogue between two pretrained chat lobes
(a .gguf file or "smollm2"; chat_dialogue.py): the left answers, the right (--gguf_right,
default the same file) judges, its verdict goes back as text; --max_new caps each turn.
A user's mistake (no checkpoint, a prompt the tokenizer cannot encode, a wide or memory
model) is one ``error:`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

# One checkpoint-and-config loader for both commands (bad input: one ``error:`` line).
from slnjax.eval_cli import UserError, load_run as load_config

USAGE = ("python -m slnjax.dialogue --workdir W --prompt TEXT [--turns T] [--temperature X] "
         "[--step N] [--seed S] | --gguf SPEC [--gguf_right SPEC] [--max_new N] --prompt TEXT")


def encode_prompt(tokenizer, text: str, vocab_size: int) -> list[int]:
  """bos + the prompt's ids; UserError when the tokenizer cannot encode it faithfully
  (unknown characters) or an id falls outside the lobe's vocabulary."""
  if not text:
    raise UserError("--prompt is empty: give the text the model should answer, e.g. "
                    "--prompt \"12+34=\".")
  ids = tokenizer.encode(text)
  back = tokenizer.decode(ids)
  if back != text:
    bad = sorted({ch for ch in text if tokenizer.decode(tokenizer.encode(ch)) != ch})
    what = f"the characters {''.join(bad)!r}" if bad else "parts of it"
    raise UserError(f"--prompt {text!r}: the task's tokenizer ({tokenizer!r}) cannot encode "
                    f"{what} (it reads back as {back!r}); use characters the task uses.")
  ids = [tokenizer.bos_id] + list(ids)
  if max(ids) >= vocab_size:
    raise UserError(f"--prompt {text!r}: token id {max(ids)} is outside the model's "
                    f"vocabulary of {vocab_size}; use characters the task uses.")
  return ids


def run(workdir: str, prompt: str, turns: int | None = None, temperature: float | None = None,
        step: int | None = None, seed: int = 0) -> dict:
  """Runs the dialogue; returns {"turns": [{"left", "right", "score"}], "halted", "flops",
  "step", "prompt_ids"}."""
  if not prompt:
    raise UserError("--prompt is empty: give the text the model should answer, e.g. "
                    "--prompt \"12+34=\".")
  if turns is not None and turns < 1:
    raise UserError(f"--turns {turns}: the loop needs at least one turn.")
  if temperature is not None and temperature < 0:
    raise UserError(f"--temperature {temperature}: use 0 (greedy) or a positive number.")
  config, step = load_config(workdir, step)
  from slnjax import build  # pylint: disable=g-import-not-at-top
  if build.is_wide(config):
    raise UserError(f"{workdir} holds a wide SLN (kind {config.model.kind!r}); this command "
                    "shows the dialogue kinds' loop.")
  if build.memory_config(config) is not None:
    raise UserError(f"{workdir} holds a model that reads a memory bank; this command has no "
                    "bank to give it (its evaluation does: the train loop's Evaluator).")
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from slnjax import checkpoint, data, evaluate, flops, loop, parallel, sln, train
  from slnjax import state as state_lib
  # pylint: enable=g-import-not-at-top
  tokenizer = data.load_tokenizer(config.task.tokenizer or None)
  model = build.build_model(config)
  ids = encode_prompt(tokenizer, prompt, model.spec.left.vocab_size)
  L = model.spec.loop
  L = dataclasses.replace(L, max_turns=turns or L.max_turns)
  if temperature == 0:
    L = dataclasses.replace(L, mode="greedy")
  elif temperature is not None:
    L = dataclasses.replace(L, temperature=float(temperature))
  model = dataclasses.replace(model, spec=dataclasses.replace(model.spec, loop=L))
  mesh = parallel.make_mesh(tuple(config.mesh.ici), tuple(config.mesh.dcn))
  ts = train.make_train_step(config, mesh)
  try:
    params = checkpoint.load_params(workdir, ts.abstract_state["params"], step)
  except (OSError, KeyError, ValueError, RuntimeError) as e:  # a damaged checkpoint
    first = str(e).splitlines()[0][:200] if str(e) else ""
    raise UserError(f"the checkpoint at step {step} in {workdir} cannot be read "
                    f"({type(e).__name__}: {first}); pass another --step.") from e
  tau = state_lib.tau_at(config.tau, config.steps, step)
  prompt_BP = jnp.asarray([ids], jnp.int32)
  plen_B = jnp.asarray([len(ids)], jnp.int32)
  go = jax.jit(lambda p, i, n, k: sln.rollout(model, p, i, n, k, tau))
  d = jax.tree.map(np.asarray, go(params, prompt_BP, plen_B, jax.random.PRNGKey(seed)))
  out = []
  for n in range(int(d.turns_B[0])):
    t = {"left": evaluate.turn_text(tokenizer, d.left_ids_NBM[n, 0], d.left_valid_NBM[n, 0])}
    if model.spec.tall:
      right = d.right_ids_NBM[n, 0]
      t["right"] = evaluate.turn_text(tokenizer, right, np.ones_like(right))
    if model.spec.scored:
      t["score"] = float(d.score_NB[n, 0])
    out.append(t)
  return {"turns": out, "halted": loop.HALT_NAMES.get(int(d.halt_reason_B[0]), "?"),
          "flops": float(flops.dialogue_flops(model, d, [len(ids)])[0]), "step": step,
          "prompt_ids": ids, "kind": model.kind}


def format_dialogue(prompt: str, r: dict) -> str:
  lines = [f"{r['kind']} SLN, checkpoint step {r['step']}",
           f"prompt: {prompt!r} ({len(r['prompt_ids'])} tokens with bos)"]
  for n, t in enumerate(r["turns"]):
    line = f"turn {n + 1}: left {t['left']!r}"
    if "right" in t:
      line += f" | right {t['right']!r}"
    if "score" in t:
      line += f" | critic score {t['score']:.3f}"
    lines.append(line)
  lines.append(f"halted: {r['halted']} after {len(r['turns'])} turn(s); "
               f"{r['flops']:.3g} inference FLOPs")
  return "\n".join(lines)


class _Parser(argparse.ArgumentParser):

  def error(self, message):
    print(f"error: {message} (usage: {USAGE})", file=sys.stderr)
    sys.exit(2)


def main(argv=None) -> None:
  parser = _Parser(prog="python -m slnjax.dialogue", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", help="a training run's workdir")
  parser.add_argument("--gguf", help='chat lobes from a GGUF file instead: a path or "smollm2"')
  parser.add_argument("--gguf_right", help="the right lobe's GGUF (default: --gguf's)")
  parser.add_argument("--max_new", type=int, default=48, help="--gguf: tokens per turn at most")
  parser.add_argument("--prompt", required=True, help='the prompt text, e.g. "12+34="')
  parser.add_argument("--turns", type=int, default=None, help="turn limit (default: the model's)")
  parser.add_argument("--temperature", type=float, default=None,
                      help="sampling temperature (default: the config's; 0: greedy)")
  parser.add_argument("--step", type=int, default=None, help="default: the latest checkpoint")
  parser.add_argument("--seed", type=int, default=0, help="the sampling seed")
  a = parser.parse_args(argv)
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # orbax's notes on reading a checkpoint read-only
  if (a.workdir is None) == (a.gguf is None):
    parser.error("give either --workdir (a trained SLN) or --gguf (pretrained chat lobes)")
  try:
    if a.gguf is not None:
      _chat(a)
      return
    r = run(a.workdir, a.prompt, a.turns, a.temperature, a.step, a.seed)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(format_dialogue(a.prompt, r), flush=True)


def _chat(a) -> None:
  """--gguf: the chat dialogue of two pretrained lobes (chat_dialogue.py)."""
  for flag, value, ok in (("--turns", a.turns, a.turns is None or a.turns >= 1),
                          ("--max_new", a.max_new, a.max_new >= 1),
                          ("--temperature", a.temperature, (a.temperature or 0) >= 0)):
    if not ok:
      raise UserError(f"{flag} {value}: use a positive number.")
  if a.step is not None or not a.prompt:
    raise UserError("--step belongs to --workdir runs" if a.step is not None else
                    "--prompt is empty: give the question, e.g. --prompt \"What is 23+58?\".")
  from slnjax import chat_dialogue  # pylint: disable=g-import-not-at-top
  try:
    left, right = chat_dialogue.load_lobes(a.gguf, a.gguf_right)
  except (FileNotFoundError, ImportError, ValueError) as e:
    raise UserError(str(e).splitlines()[0]) from e
  r = chat_dialogue.run(left, right, a.prompt, a.turns or 2, a.max_new, a.temperature or 0.0,
                        a.seed)
  print(chat_dialogue.format_dialogue(left, right, a.prompt, r), flush=True)


if __name__ == "__main__":
  main()
