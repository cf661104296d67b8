r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/ppo.py --workdir /tmp/sln/ppo

Actor-critic with PPO (eq. 8, Alg. 2) from the SFT parameters: the left lobe is rewarded by
the critic's score of each of its turns (4 PPO epochs per rollout, KL to the SFT model,
eq. 2), while the critic learns eq. 7 on the same rollouts. No external reward. For the
task verifier as the reward instead: --config.objective.name=ppo_verifier.
Not measured yet: this full-size run was not made (the session's CPU time went to the SFT,
critic and ablation runs). Its smoke version is what tests/test_train.py trains; expect a
rollout-based step to run at ~0.3-1 steps/s on 2 cores (critic_bce measured 1.1 steps/s;
a started PPO run did 0.2-0.3 steps/s with 4 PPO epochs per rollout on a shared machine).
Smoke version (tests): --config experiments/ppo.py:smoke
"""
from slnjax import config


def get_config(arg=None):
  return config.cpu_experiment(
      "lateralized", "ppo", arg,
      size=dict(steps=120, log_every=20, eval_every=120, checkpoint_every=120,
                init_from="/tmp/sln/sft"),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)),
      objective=dict(kl_coef=0.05, baseline="mean"),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
