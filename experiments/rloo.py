r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/rloo.py --workdir /tmp/sln/rloo

RLOO: each prompt is answered 4 times; each sample's baseline is the mean return of the
other three (leave-one-out). Return: the critic's score of the final turn (the critic
learns eq. 7 on the same rollouts). Starts from the SFT parameters. Verifier reward
instead: --config.objective.name=rloo_verifier.
Not measured yet: this full-size run was not made (the session's CPU time went to the SFT,
critic and ablation runs). Its smoke version is what tests/test_train.py trains; expect a
rollout-based step to run at ~0.3-1 steps/s on 2 cores (critic_bce measured 1.1 steps/s).
Smoke version (tests): --config experiments/rloo.py:smoke
"""
from slnjax import config


def get_config(arg=None):
  return config.cpu_experiment(
      "lateralized", "rloo", arg,
      size=dict(steps=300, log_every=25, eval_every=300, checkpoint_every=300,
                init_from="/tmp/sln/sft", batch_size=16),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)),
      objective=dict(samples=4),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
