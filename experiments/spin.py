r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/spin.py --workdir /tmp/sln/spin

SPIN (Alg. 3) from the SFT parameters: the previous iterate (refreshed every 100 steps)
plays the whole dialogue; the left lobe learns to prefer the true answer over every turn
the previous iterate wrote (logistic loss on the log-ratio margins), the critic learns
eq. 7 on the same turns.
Not measured yet: this full-size run was not made (the session's CPU time went to the SFT,
critic and ablation runs). Its smoke version is what tests/test_train.py trains; expect a
rollout-based step to run at ~0.3-1 steps/s on 2 cores (critic_bce measured 1.1 steps/s).
Smoke version (tests): --config experiments/spin.py:smoke
"""
from slnjax import config


def get_config(arg=None):
  return config.cpu_experiment(
      "lateralized", "spin", arg,
      size=dict(steps=300, log_every=25, eval_every=300, checkpoint_every=300,
                init_from="/tmp/sln/sft"),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)),
      objective=dict(refresh_every=100),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
