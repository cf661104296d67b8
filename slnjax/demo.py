"""`make demo`: an inner dialogue on a tiny random lateralized SLN, as a readable transcript.

    python -m slnjax.demo [--mode soft] [--threshold 0.5]

Random weights: the words are noise, but every part of the loop is real — KV-cached turns,
soft tokens, the critic's score fed back, per-example halting.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from slnjax import lobes, loop, sln
from slnjax.data.tokenizers import ByteTokenizer


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--mode", default="soft")
  ap.add_argument("--threshold", type=float, default=0.5)
  ap.add_argument("--turns", type=int, default=4)
  args = ap.parse_args(argv)
  tok = ByteTokenizer()
  cfg = lobes.tiny("llama", vocab_size=tok.vocab_size)
  model = sln.build("lateralized", cfg, lobes.tiny("neox", vocab_size=tok.vocab_size),
                    loop.LoopConfig(turn_len=12, max_turns=args.turns, mode=args.mode,
                                    threshold=args.threshold, stop_token=tok.stop_of_turn_id))
  params = sln.init(model, jax.random.key(0))
  prompts = ["12+34=", "What is 7*6?", "Count: a b c"]
  enc = [tok.encode(p) for p in prompts]
  P = max(len(e) for e in enc)
  ids_BP = jnp.array([e + [tok.pad_id] * (P - len(e)) for e in enc], jnp.int32)
  len_B = jnp.array([len(e) for e in enc], jnp.int32)
  d = jax.jit(sln.rollout, static_argnums=0)(model, params, ids_BP, len_B, jax.random.key(1),
                                             0.1)
  print(f"lateralized SLN, {lobes.param_count(params['left'])} + "
        f"{lobes.param_count(params['right'])} params, mode={args.mode}, "
        f"threshold={args.threshold}, IDL limit={args.turns}\n")
  for b, prompt in enumerate(prompts):
    print(f"prompt: {prompt!r}")
    for n in range(int(d.turns_B[b])):
      ids = np.asarray(d.left_ids_NBM[n, b])[np.asarray(d.left_valid_NBM[n, b])]
      print(f"  turn {n + 1}  left : {tok.decode(ids.tolist())!r}")
      print(f"          right: score {float(d.score_NB[n, b]):.4f}")
    reason = loop.HALT_NAMES[int(d.halt_reason_B[b])]
    print(f"  halted after {int(d.turns_B[b])} turn(s): {reason}\n")


if __name__ == "__main__":
  main()
