r"""python -m slnjax.main --config experiments/ablation_f_lateralized.py --workdir /tmp/sln/ablation_f

Ablation row (F): a lateralized tall SLN — the left lobe writes, the right lobe only scores
(a critic); the left reads the score and tries again until the score reaches 0.5 (at most 3
turns). Same procedure and budget as row A (``bptt``), plus the critic's eq. 7 on the
unrolled turns.
Run time (2-core CPU, measured 2026-12-01): 5.5 min (600 steps at ~1.8 steps/s, then eval).
Result: on 512 test problems, accuracy after turn 1 0.01 and after the loop 0.11 (1 digit
0.30, 2 digits 0.03, 3 digits 0.01), every dialogue 3 turns: the critic learns to reject
every generated turn (true 0.9997 vs generated 0.0003; it agrees with the verifier on 95%
of turns only because most turns are wrong), so nothing halts early, and the left lobe learns
to answer in the last turn, where the loss is. At this budget row F is below row A (0.34).
Smoke version (tests): --config experiments/ablation_f_lateralized.py:smoke
"""
from experiments import common

ABLATION = dict(steps=600, log_every=100, eval_every=600, checkpoint_every=300)


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "bptt", arg, size=ABLATION,
      model=dict(loop=dict(max_turns=3, mode="soft", threshold=0.5)),
      objective=dict(critic_weight=0.5))
