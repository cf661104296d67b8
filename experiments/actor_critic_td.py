r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/actor_critic_td.py --workdir /tmp/sln/actor_critic_td

Actor-critic with the external reward (the note after eq. 8): the task verifier rewards
each turn and the TD error δ = r + γ·Critic(x + y_true) - Critic(x + x_left) trains the
critic and weights the left lobe's policy gradient. Here γ = 0 and no eq. 7 term: δ = r - ŷ,
so the critic learns to predict whether a turn is correct (it halts the loop when it
believes so) and serves as the actor's baseline. Starts from the SFT parameters. The
paper's form: --config.objective.gamma=0.99 --config.objective.bce_weight=1.0.
Run time (2-core CPU, measured 2026-12-01, sharing the machine with a test run): 6.5 min
after the SFT run (500 steps at ~1.0 steps/s, then eval).
Result: on 512 test problems the critic agrees with the verifier on 98% of turns and the
loop adapts its compute to difficulty: 1-digit problems stop after 1.00 turn (accuracy
1.00), 2-digit after 2.67 turns (0.15), 3-digit run to the limit of 3 (0.00); accuracy after
turn 1 0.40, after the loop 0.37 (SFT alone: 0.43 / 0.34 with an untrained critic).
Smoke version (tests): --config experiments/actor_critic_td.py:smoke
"""
from slnjax import config
from experiments import common


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "actor_critic_td", arg,
      size=dict(steps=500, log_every=50, eval_every=500, checkpoint_every=500,
                init_from="/tmp/sln/sft"),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)),
      objective=dict(gamma=0.0, bce_weight=0.0),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
