r"""python -m slnjax.main --config experiments/bptt.py --workdir /tmp/sln/bptt

End-to-end training through soft tokens (eq. 3-4): the lateralized dialogue is unrolled
differentiably and the cross-entropy of the answer turn back-propagates through every turn
(full BPTT, the append-only reverse pass) into both lobes, the critic included through the
score it feeds back. See tbptt_depth.py for the truncated-BPTT sweep.
Run time (2-core CPU, measured 2026-12-01, sharing the cores with test runs): 6.1 min
(800 steps at ~2.8 steps/s, then eval).
Result: the critic learns to approve the first turn (final score 0.58 > threshold 0.5), so
the loop halts after 1 turn for every example and training is single-turn answering:
answer cross-entropy 1.04, accuracy 0.34 on 512 test problems (row A, a single lobe, 0.34
at 600 steps). Row F (ablation_f_lateralized.py: the same procedure at 600 steps) still ran
3 turns (0.11).
Smoke version (tests): --config experiments/bptt.py:smoke
"""
from experiments import common


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "bptt", arg, size=dict(steps=800, eval_every=800, checkpoint_every=400),
      model=dict(loop=dict(max_turns=3, mode="soft", threshold=0.5, bptt_depth=-1)))
