r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft

SFT (paper eq. 1): the left lobe of a lateralized SLN learns the answers by teacher forcing
(the critic is untouched). Its checkpoint is the starting point of the score-function
procedures (critic_bce, ppo, actor_critic_td, reinforce, rloo, self_play, spin: their
configs read /tmp/sln/sft through init_from).
Run time (2-core CPU, measured 2026-12-01): 6 min (3000 steps at 10-25 steps/s, then eval).
Result: train token accuracy 0.81 (nll 0.49); eval on 512 test problems (turns sampled at
temperature 0.7, critic untrained so halting is arbitrary): accuracy after turn 1 0.43
(1 digit 1.00, 2 digits 0.24, 3 digits 0.09), mean turns 1.34.
Smoke version (tests): --config experiments/sft.py:smoke
"""
from experiments import common


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "sft", arg, size=dict(steps=3000, eval_every=3000, checkpoint_every=1000),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)))
