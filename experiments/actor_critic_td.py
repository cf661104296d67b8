r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/actor_critic_td.py --workdir /tmp/sln/actor_critic_td

Actor-critic with the external reward (the note after eq. 8): the task verifier rewards
each turn and the TD error δ = r + γ·Critic(x + y_true) - Critic(x + x_left) trains the
critic and weights the left lobe's policy gradient. Here γ = 0 and no eq. 7 term: δ = r - ŷ,
so the critic learns to predict whether a turn is correct (it halts the loop when it
believes so) and serves as the actor's baseline. Starts from the SFT parameters. The
paper's form: --config.objective.gamma=0.99 --config.objective.bce_weight=1.0.
Not measured yet: this full-size run was not made (the session's CPU time went to the SFT,
critic and ablation runs). Its smoke version is what tests/test_train.py trains; expect a
rollout-based step to run at ~0.3-1 steps/s on 2 cores (critic_bce measured 1.1 steps/s).
Smoke version (tests): --config experiments/actor_critic_td.py:smoke
"""
from slnjax import config


def get_config(arg=None):
  return config.cpu_experiment(
      "lateralized", "actor_critic_td", arg,
      size=dict(steps=500, log_every=50, eval_every=500, checkpoint_every=500,
                init_from="/tmp/sln/sft"),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)),
      objective=dict(gamma=0.0, bce_weight=0.0),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
