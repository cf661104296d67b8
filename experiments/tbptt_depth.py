r"""python -m slnjax.sweep --config experiments/tbptt_depth.py --workdir /tmp/sln/tbptt_depth

Truncated-BPTT depth sweep: the lateralized SLN trained end to end through soft tokens
(``bptt``, 5 turns, no early halting) with gradients through the last k turns,
k in {1, 2, 4, full}. Writes sweep.md, sweep.png and sweep.json: accuracy, the compiled
memory of the train step (temp + argument + output bytes) and the step time against k.
Add --seeds 3 for mean ± standard error over seeds 0-2. Each run checkpoints every 100
steps: a rerun (after preemption, or of the finished sweep) resumes or reads runs back.
Run time (2-core CPU, measured 2026-12-01): 11 min (4 settings x 300 steps, each evaluated).
Result: (one seed; step ms then was the last logging interval, not yet the median over
intervals): on 512 test problems (docs/figures/tbptt_depth_sweep.png is this run's plot):

  k     acc. after loop   step memory MiB   step ms   final loss
  1     0.006             62.8              315       1.97
  2     0.012             62.8              331       1.72
  4     0.012             62.8              478       1.66
  full  0.117             62.8              434       1.43

Compiled step memory does not depend on k (the append-only reverse pass). Every k < 5
also cuts the gradient into the prompt's encoding (the prefill is before the window);
only full depth keeps it, and only full depth learned to answer at this budget.
Smoke version: --config experiments/tbptt_depth.py:smoke
"""
from experiments import common


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "bptt", arg,
      size=dict(steps=300, log_every=50, eval_every=300, checkpoint_every=100),
      model=dict(loop=dict(max_turns=5, mode="soft", threshold=None, bptt_depth=-1)))


def get_sweep(arg=None):
  del arg
  # k = 0 (no gradient through the loop) is left out: the bptt objective then has no gradient
  # at all and refuses the config, so the row would be an untrained model.
  return {"key": "model.loop.bptt_depth", "values": [1, 2, 4, -1],
          "labels": ["1", "2", "4", "full"]}
