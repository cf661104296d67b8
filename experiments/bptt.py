r"""python -m slnjax.main --config experiments/bptt.py --workdir /tmp/sln/bptt

End-to-end training through soft tokens (eq. 3-4): the lateralized dialogue is unrolled
differentiably and the cross-entropy of the answer turn back-propagates through every turn
(full BPTT, the append-only reverse pass) into both lobes, the critic included through the
score it feeds back. See tbptt_depth.py for the truncated-BPTT sweep.
Not measured yet: this full-size run was not made (the session's CPU time went to the SFT,
critic and ablation runs). Its smoke version is what tests/test_train.py trains; the same procedure
at 300 steps is ablation row F (experiments/ablation_f_lateralized.py), measured there.
Smoke version (tests): --config experiments/bptt.py:smoke
"""
from slnjax import config


def get_config(arg=None):
  return config.cpu_experiment(
      "lateralized", "bptt", arg, size=dict(steps=1500, eval_every=750, checkpoint_every=750),
      model=dict(loop=dict(max_turns=3, mode="soft", threshold=0.5, bptt_depth=-1)))
