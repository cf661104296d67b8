r"""python -m slnjax.main --config experiments/sft.py --workdir /tmp/sln/sft && python -m slnjax.main --config experiments/reinforce.py --workdir /tmp/sln/reinforce

REINFORCE with a mean baseline: the left lobe's whole dialogue is one trajectory whose
return is the critic's score of its final turn; the critic learns eq. 7 on the same
rollouts. Starts from the SFT parameters. Verifier reward instead of the critic:
--config.objective.name=reinforce_verifier.
Run time (2-core CPU, measured 2026-12-01, sharing the cores with test runs): 9.6 min
after the SFT run (300 steps at 0.9-1.6 steps/s, then eval).
Result: the critic learns to reject every generated turn (score of the final turn 0.0016,
of the true answer 0.998), so the return is ~0 for every sample and the policy gradient
vanishes (|advantage| ~1e-5); nothing halts early (3 turns). On 512 test problems:
accuracy after turn 1 0.26 (SFT: 0.43), after the loop 0.00: the SFT lobe never learnt what
to write after a low score, and its later turns are wrong. critic agrees with the verifier
on 91% of turns (it says "wrong" and nearly every turn is).
Smoke version (tests): --config experiments/reinforce.py:smoke
"""
from slnjax import config
from experiments import common


def get_config(arg=None):
  return common.cpu_experiment(
      "lateralized", "reinforce", arg,
      size=dict(steps=300, log_every=25, eval_every=300, checkpoint_every=300,
                init_from="/tmp/sln/sft"),
      model=dict(loop=dict(max_turns=3, mode="hard", temperature=0.7, threshold=0.5)),
      optim=dict(left=dict(lr=3e-4, warmup_steps=20), right=dict(lr=1e-3, warmup_steps=20)))
