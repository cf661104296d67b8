r"""python -m slnjax.main --config experiments/lateralized_wide.py --workdir /tmp/wide_g

Ablation row G: the lateralized wide SLN — the same set-up as experiments/wide.py (row E),
but the right lobe's output is restricted to a score: it reads the context and returns a
score in [0, 1] that the main gate sees at its next call (and that enters the context as one
learned score embedding per slot). The score is trained as a critic: BCE against whether the
answer decoded from the context it judged is right (WideLossConfig.critic).

Argument: as for experiments/wide.py ("smoke", route=..., steps=..., seed=..., max_iters=...).
Run time (2-core CPU, measured 2026-12-01, sharing the cores with a test run): 4.1 min
(800 steps at ~8 steps/s, then eval on 512 test problems).
Result: as for row E, the gate picks OUTPUT at its first call for every example (0 lobe
calls), accuracy 0.08; the right lobe's score is trained (critic_bce 0.18) but never read.
Checkpoints, metrics and evaluation as for experiments/wide.py (eval/critic_acc is not
reported: the score is logged in training as critic_bce).
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "wide_experiment_base", os.path.join(os.path.dirname(os.path.abspath(__file__)), "wide.py"))
_wide = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_wide)


def get_config(arg: str | None = None):
  return _wide.make("lateralized_wide", arg)
