r"""python -m slnjax.main --config experiments/ablation_d_tall.py --workdir /tmp/sln/ablation_d

Ablation row (D): a tall SLN — two distinct lobes that both write turns (3 rounds), trained
together end to end through the soft tokens (``bptt``). Same budget as row A.
Run time (2-core CPU, measured 2026-12-01, sharing the machine with a test run): 9 min
(600 steps at ~1.0 steps/s, then eval).
Result: on 512 test problems, accuracy after turn 1 0.01 and after the 3 rounds 0.09
(1 digit 0.27, 2 and 3 digits 0.00); the loss is on the last turn only, so the first turns
are not answers. At this budget row D is below row A (0.34).
Smoke version (tests): --config experiments/ablation_d_tall.py:smoke
"""
from experiments import common

ABLATION = dict(steps=600, log_every=100, eval_every=600, checkpoint_every=300)


def get_config(arg=None):
  return common.cpu_experiment(
      "tall", "bptt", arg, size=ABLATION,
      model=dict(loop=dict(max_turns=3, mode="soft", threshold=None)))
