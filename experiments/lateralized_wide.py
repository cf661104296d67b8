r"""python -m slnjax.main --config experiments/lateralized_wide.py --workdir /tmp/wide_g

Ablation row G: the lateralized wide SLN — the same set-up as experiments/wide.py (row E),
but the right lobe's output is restricted to a score: it reads the context and returns a
score in [0, 1] that the main gate sees at its next call (and that enters the context as one
learned score embedding per slot). The score is trained as a critic: BCE against whether the
answer decoded from the context it judged is right (WideLossConfig.critic).

Argument: as for experiments/wide.py ("smoke", route=..., steps=..., seed=..., max_iters=...).
Not measured yet: no full-length run has been timed or evaluated (an estimate, not a
measurement: 10-20 minutes on 2 cores at the default 800 steps). docs/wide_and_memory.md
lists what the run reports. Checkpoints, metrics and evaluation as for experiments/wide.py
(eval/critic_acc is not reported: the score is logged in training as critic_bce).
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "wide_experiment_base", os.path.join(os.path.dirname(os.path.abspath(__file__)), "wide.py"))
_wide = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_wide)


def get_config(arg: str | None = None):
  return _wide.make("lateralized_wide", arg)
