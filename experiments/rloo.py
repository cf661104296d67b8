r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/rloo.py --workdir /tmp/sln/rloo

RLOO: each prompt is answered 4 times; each sample's baseline is the mean return of the
other three (leave-one-out). Return: the critic's score of the final turn (the critic
learns eq. 7 on the same rollouts). Starts from the SFT parameters. Verifier reward
instead: --config.objective.name=rloo_verifier.
Run time (2-core CPU, measured 2026-12-01, sharing the cores with test runs): 4.5 min
after the SFT run (300 steps at ~2 steps/s, batch 16 prompts x 4 samples, then eval).
Result: as for reinforce.py, the critic rejects every sample (final-turn score 0.0016), the
leave-one-out advantages are ~3e-6 and the actor barely moves: on 128 test problems
(8 batches of 16) accuracy after turn 1 0.39, after the loop 0.02, 3 turns always.
Smoke version (tests): --config experiments/rloo.py:smoke
"""
from slnjax import config
from experiments import common


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "rloo", arg,
      size=dict(steps=300, log_every=25, eval_every=300, checkpoint_every=300,
                init_from="/tmp/sln/sft", batch_size=16),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)),
      objective=dict(samples=4),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
