r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/spin.py --workdir /tmp/sln/spin

SPIN (Alg. 3) from the SFT parameters: the previous iterate (refreshed every 100 steps)
plays the whole dialogue; the left lobe learns to prefer the true answer over every turn
the previous iterate wrote (logistic loss on the log-ratio margins), the critic learns
eq. 7 on the same turns.
Run time (2-core CPU, measured 2026-12-01, sharing the cores with test runs): 5.5 min
after the SFT run (300 steps at ~1 step/s, then eval).
Result: the margin between the true answer and the previous iterate's turns grows to 3.8
nats (SPIN loss 0.09) and turn-1 accuracy stays close to SFT's: on 512 test problems 0.35
after turn 1, 0.004 after the loop (the eq. 7 critic rejects every turn, so the loop runs
3 turns and the final turn is a late, wrong one).
Smoke version (tests): --config experiments/spin.py:smoke
"""
from experiments import common


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "spin", arg,
      size=dict(steps=300, log_every=25, eval_every=300, checkpoint_every=300,
                init_from="/tmp/sln/sft"),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)),
      objective=dict(refresh_every=100),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
