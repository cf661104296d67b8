r"""python -m slnjax.main --config experiments/ablation_b_self_reflection.py --workdir /tmp/sln/ablation_b

Ablation row (B): one lobe in both roles (same weights) — it writes a turn, scores it with
its own score head, reads the score and may try again (up to 3 turns, halting when its
score reaches 0.5). Same procedure and budget as row A (``bptt`` through the soft tokens,
the cross-entropy of the turn where it halted), plus the critic's eq. 7.
Run time (2-core CPU, measured 2026-12-01, sharing the machine with a test run): 10 min
(600 steps at ~0.9 steps/s, then eval).
Result: on 512 test problems, accuracy after turn 1 0.03 and after the loop 0.05 (1 digit
0.16, 2 and 3 digits 0.00), always 3 turns: as in row F the eq. 7 critic rejects every
generated turn (0.0001 vs 0.9996 for true answers), so it never halts. Below row A (0.34).
Smoke version (tests): --config experiments/ablation_b_self_reflection.py:smoke
"""
from experiments import common

ABLATION = dict(steps=600, log_every=100, eval_every=600, checkpoint_every=300)


def get_config(arg=None):
  return common.cpu_experiment(
      "self_reflection", "bptt", arg, size=ABLATION,
      model=dict(loop=dict(max_turns=3, mode="soft", threshold=0.5)),
      objective=dict(critic_weight=0.5))
