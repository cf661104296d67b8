r"""python -m slnjax.main --config experiments/ablation_a_single.py --workdir /tmp/sln/ablation_a

Ablation row (A): a single LM, no critic, one turn — the baseline. Trained with the same
procedure and budget as rows B, C, D and F: end-to-end soft tokens (``bptt``, eq. 3-4),
cross-entropy of the answer turn.
Run time (2-core CPU, measured 2026-12-01): 1 min (600 steps at ~19 steps/s, then eval).
Result: on 512 test problems (greedy), accuracy 0.34 (1 digit 0.98, 2 digits 0.08,
3 digits 0.00); 1 turn by construction. Train cross-entropy 1.14 per answer token.
Smoke version (tests): --config experiments/ablation_a_single.py:smoke
"""
from experiments import common

ABLATION = dict(steps=600, log_every=100, eval_every=600, checkpoint_every=300)


def get_config(arg=None):
  return common.cpu_experiment(
      "single", "bptt", arg, size=ABLATION,
      model=dict(loop=dict(max_turns=1, mode="soft", threshold=None)))
