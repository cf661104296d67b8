r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/ppo.py --workdir /tmp/sln/ppo

Actor-critic with PPO (eq. 8, Alg. 2) from the SFT parameters: the left lobe is rewarded by
the critic's score of each of its turns (4 PPO epochs per rollout, KL to the SFT model,
eq. 2), while the critic learns eq. 7 on the same rollouts. No external reward. For the
task verifier as the reward instead: --config.objective.name=ppo_verifier.
Run time (2-core CPU, measured 2026-12-01, sharing the cores with test runs): 4.3 min
after the SFT run (120 steps at ~0.6 steps/s: each step is one rollout and 4 PPO epochs of
a teacher-forced replay, then eval).
Result: the KL anchor keeps turn 1 at SFT's level (accuracy 0.41 on 512 test problems, KL
to SFT 0.012, clip fraction 0.02) while the eq. 7 critic rejects every turn (score 0.02),
so the loop runs 3 turns and accuracy after the loop is 0.02. With the verifier as reward
(actor_critic_td.py) the critic learns when to stop instead.
Smoke version (tests): --config experiments/ppo.py:smoke
"""
from slnjax import config
from experiments import common


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "ppo", arg,
      size=dict(steps=120, log_every=20, eval_every=120, checkpoint_every=120,
                init_from="/tmp/sln/sft"),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)),
      objective=dict(kl_coef=0.05, baseline="mean"),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
