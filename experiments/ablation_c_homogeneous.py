r"""python -m slnjax.main --config experiments/ablation_c_homogeneous.py --workdir /tmp/sln/ablation_c

Ablation row (C): homogeneous multi-agent — two copies of the same lobe talk in a tall loop
(each writes a turn per round, 3 rounds), but only the left copy is trained ("not trained
together"; the right copy stays at its initial weights). Same procedure and budget as row A.
Run time (2-core CPU, measured 2026-12-01, sharing the machine with a test run): 9 min
(600 steps at ~1.9 steps/s on its own, slower while shared, then eval).
Result: on 512 test problems, accuracy after turn 1 0.00 and after the 3 rounds 0.13
(1 digit 0.39, 2 digits 0.02, 3 digits 0.00). Below row A (0.34), above rows B, D and F.
Smoke version (tests): --config experiments/ablation_c_homogeneous.py:smoke
"""
from experiments import common

ABLATION = dict(steps=600, log_every=100, eval_every=600, checkpoint_every=300)


def get_config(arg=None):
  return common.cpu_experiment(
      "homogeneous", "bptt", arg, size=ABLATION,
      model=dict(loop=dict(max_turns=3, mode="soft", threshold=None)))
