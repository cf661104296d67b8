r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/self_play.py --workdir /tmp/sln/self_play

Actor-critic with self-play (§5.4) from the SFT parameters: on each batch the critic learns
eq. 7 once, then the actor samples and takes policy-gradient steps rewarded by the critic
until the critic is satisfied (mean final score >= 0.5) or 4 updates have been made.
Run time (2-core CPU, measured 2026-12-01, sharing the cores with test runs): 6.5 min
after the SFT run (200 steps at ~0.7 steps/s, 4 inner actor updates each, then eval).
Result: the critic is never satisfied (mean final score 0.005 against the 0.5 threshold),
so every batch uses all 4 inner updates; the critic's reward carries no signal (~0). On
512 test problems accuracy after turn 1 0.36, after the loop 0.01, 3 turns always.
Smoke version (tests): --config experiments/self_play.py:smoke
"""
from experiments import common


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "self_play", arg,
      size=dict(steps=200, log_every=25, eval_every=200, checkpoint_every=200,
                init_from="/tmp/sln/sft"),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)),
      objective=dict(inner_steps=4, baseline="mean"),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
