r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/critic_bce.py --workdir /tmp/sln/critic_bce

The critic as a reward model (eq. 7): from the SFT run's parameters, the right lobe learns
to score x + y_true high and x + (the left lobe's sampled answers) low; the left lobe is
not trained. With --config.objective.pgd=True, Pavlovian Gradient Decay (§5.5) weights the
answer prefixes and every turn.
Run time (2-core CPU, measured 2026-12-01, sharing the machine with a test run): 4.5 min
after the SFT run (300 steps at ~1.1 steps/s: each step samples a 3-turn rollout).
Result: the critic separates true answers (score 0.998) from sampled ones (0.002); on 512
test problems it agrees with the verifier on 85% of turns. Because eq. 7 labels *every*
sampled turn fake, correct ones included, it never approves: every dialogue runs to the
IDL limit (3 turns) and the final-turn accuracy falls to 0.01 (turn 1: 0.43) -- the
left lobe, trained on first turns only, has not learned to revise.
Smoke version (tests): --config experiments/critic_bce.py:smoke
"""
from slnjax import config
from experiments import common


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "critic_bce", arg,
      size=dict(steps=300, log_every=25, eval_every=300, checkpoint_every=300,
                init_from="/tmp/sln/sft"),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)),
      objective=dict(negatives="all"),
      optim=dict(right=dict(lr=1e-3, warmup_steps=20)))
