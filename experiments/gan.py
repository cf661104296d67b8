r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/gan.py --workdir /tmp/sln/gan

GAN (Alg. 1) from the SFT parameters: the left lobe generates through straight-through
tokens (exact one-hot forward, soft gradient), the critic discriminates x + y_true from
x + G(x), and the generator learns to fool it through the differentiable unroll.
Not measured yet: this full-size run was not made (the session's CPU time went to the SFT,
critic and ablation runs). Its smoke version is what tests/test_train.py trains; expect a
rollout-based step to run at ~0.3-1 steps/s on 2 cores (critic_bce measured 1.1 steps/s).
Smoke version (tests): --config experiments/gan.py:smoke
"""
from slnjax import config


def get_config(arg=None):
  return config.cpu_experiment(
      "lateralized", "gan", arg,
      size=dict(steps=300, log_every=25, eval_every=300, checkpoint_every=300,
                init_from="/tmp/sln/sft"),
      model=dict(loop=dict(max_turns=3, mode="straight_through", threshold=0.5)),
      objective=dict(generator_loss="non_saturating"),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
