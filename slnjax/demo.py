r"""`make demo`: train the default lateralized tall SLN on `addition` on the CPU, evaluate it.

    python -m slnjax.demo [--workdir DIR]

A lateralized SLN: a left lobe that writes answers and a right lobe that only scores them
(a critic), in an inner dialogue of up to 3 turns that halts as soon as the critic's score
reaches 0.5 (sampled turns, temperature 0.7). Two stages, the experiments' own configs:

  1. experiments/sft.py            the left lobe learns the answers (eq. 1), 2000 steps
     (the experiment itself runs 3000);
  2. experiments/actor_critic_td.py from there, the task verifier rewards every turn: the
     critic learns to predict whether a turn is right (and so when to stop), the left lobe
     learns from the TD error (policy gradient), 300 steps (the experiment runs 500).

The demo's step budgets are shorter than the experiments' so that it fits in ~10 minutes
on a 2-core CPU. Measured 2026-12-01 (2 cores, sharing them with a short probe part of the
time): 9.2 min in all. After SFT: accuracy 0.41 after turn 1, 0.32 after the loop, 1.48
turns (untrained critic). After actor-critic: 0.40 / 0.37, 2.25 turns; the critic agrees
with the verifier on 98% of turns; 1-digit problems stop after 1.00 turn (accuracy 1.00),
2-digit after 2.64, 3-digit run to the limit of 3.

Then it prints the accuracy after the first turn and after the loop, the mean number of
turns (per difficulty: adaptive compute), how often the critic agrees with the verifier,
and two dialogue transcripts: one that ends right and one that ends wrong. Without
--workdir it trains in a fresh temporary directory; with one it resumes there.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
import time

from absl import app, flags, logging

_WORKDIR = None  # the --workdir flag, defined only when run as a program (tests import this)


# Shorter than the experiments' budgets (3000 and 500 steps) so the demo fits ~10 minutes.
DEMO_STEPS = {
    "sft": dict(steps=2000, eval_every=2000, checkpoint_every=2000),
    "actor_critic_td": dict(steps=300, eval_every=300, checkpoint_every=300),
}


def experiment_config(name: str, **overrides):
  from slnjax import cli  # pylint: disable=g-import-not-at-top
  cli.experiments_importable()
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location(f"demo_{name}",
                                                os.path.join(here, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  with config.unlocked():
    config.update(overrides)
  return config


def _table(out: dict) -> str:
  diffs = sorted({int(k.split("/d")[1]) for k in out if k.startswith("eval/turns/d")})
  lines = ["  digits | accuracy turn 1 | accuracy after loop | mean turns",
           "  -------+-----------------+---------------------+-----------"]
  for d in diffs:
    lines.append(f"  {d:>6} | {out[f'eval/acc_turn1/d{d}']:>15.3f} | "
                 f"{out[f'eval/acc_final/d{d}']:>19.3f} | {out[f'eval/turns/d{d}']:>9.2f}")
  return "\n".join(lines)


def pick_dialogues(transcripts: str) -> list[tuple[str, str]]:
  """(title, dialogue) for a success and a failure of the verifier on the final turn (each
  when the transcripts have one; a dialogue of more than one turn first), from a
  transcripts file of slnjax.evaluate."""
  blocks = [b for b in transcripts.split("\n\n") if b.startswith("---")]
  final = lambda b: [l for l in b.splitlines() if l.startswith("turn ")][-1:] or [""]
  right = [b for b in blocks if final(b)[0].endswith("| correct")]
  wrong = [b for b in blocks if final(b)[0].endswith("| wrong")]
  out = []
  for title, group in (("A dialogue from the test set that ends right (verifier: correct)", right),
                       ("One that ends wrong (verifier: wrong)", wrong)):
    if group:
      out.append((title, next((b for b in group if "\nturn 2" in b), group[0])))
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from slnjax import train  # pylint: disable=g-import-not-at-top
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="slnjax_demo_")
  t0 = time.time()
  stages = [("sft", experiment_config("sft", **DEMO_STEPS["sft"])),
            ("actor_critic_td", experiment_config(
                "actor_critic_td", init_from=os.path.join(workdir, "sft"),
                **DEMO_STEPS["actor_critic_td"]))]
  stages[-1][1].eval.transcripts = 32  # enough to hold a success and a failure
  results = {}
  for name, config in stages:
    print(f"== stage {name}: {config.model.kind} SLN, objective {config.objective.name}, "
          f"{config.steps} steps, in {workdir}/{name}", flush=True)
    results[name] = train.train(config, os.path.join(workdir, name))
  out, config = results["actor_critic_td"], stages[-1][1]
  minutes = (time.time() - t0) / 60
  sft = results["sft"]
  print(f"\nDone in {minutes:.1f} min. Test set: {out.get('eval/examples', 0):.0f} problems.")
  print("Accuracy: the task verifier's exact match of the decoded answer (not token accuracy).")
  print("                          after SFT   after actor-critic")
  print(f"  accuracy after turn 1:   {sft['eval/acc_turn1']:>9.3f}   {out['eval/acc_turn1']:>18.3f}")
  print(f"  accuracy after the loop: {sft['eval/acc_final']:>9.3f}   {out['eval/acc_final']:>18.3f}")
  print(f"  mean turns used (of {config.model.loop.max_turns}): {sft['eval/turns']:>6.2f}   "
        f"{out['eval/turns']:>18.2f}")
  if "eval/critic_acc" in out:
    print(f"  critic agrees with the verifier: {sft.get('eval/critic_acc', float('nan')):.1%} "
          f"-> {out['eval/critic_acc']:.1%} of the turns")
  print("\nAfter actor-critic, per difficulty (digits of the longer operand):\n" + _table(out))
  path = os.path.join(workdir, "actor_critic_td", "transcripts", f"step_{out['step']}.txt")
  if os.path.exists(path):
    with open(path) as f:
      for title, block in pick_dialogues(f.read()):
        print(f"\n{title}:\n{block.strip()}")
  print(f"\nMetrics: {workdir}/*/metrics.jsonl, TensorBoard: {workdir}/*/tb, "
        f"transcripts: {workdir}/*/transcripts/")


if __name__ == "__main__":
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where to train (default: a new temp dir).")
  app.run(main)
