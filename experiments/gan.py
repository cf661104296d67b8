r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/gan.py --workdir /tmp/sln/gan

GAN (Alg. 1) from the SFT parameters: the left lobe generates through straight-through
tokens (exact one-hot forward, soft gradient), the critic discriminates x + y_true from
x + G(x), and the generator learns to fool it through the differentiable unroll.
Run time (2-core CPU, measured 2026-12-01, sharing the cores with test runs): 6.9 min
after the SFT run (300 steps at ~0.8 steps/s, then eval).
Result: the discriminator wins (D(real) 0.997, D(fake) 0.002, generator loss 6.0) and the
generator's gradient through the straight-through tokens pulls it away from the SFT
answers: on 512 test problems accuracy after turn 1 0.07 (SFT: 0.43), after the loop 0.00,
3 turns always (the critic never approves).
Smoke version (tests): --config experiments/gan.py:smoke
"""
from experiments import common


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "gan", arg,
      size=dict(steps=300, log_every=25, eval_every=300, checkpoint_every=300,
                init_from="/tmp/sln/sft"),
      model=dict(loop=dict(max_turns=3, mode="straight_through", threshold=0.5)),
      objective=dict(generator_loss="non_saturating"),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
