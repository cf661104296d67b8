r"""python -m slnjax.main --config experiments/lateralized_wide.py --workdir /tmp/wide_g

Ablation row G: the lateralized wide SLN — the same set-up as experiments/wide.py (row E),
but the right lobe's output is restricted to a score: it reads the context and returns a
score in [0, 1] that the main gate sees at its next call (and that enters the context as one
learned score embedding per slot). The score is trained as a critic: BCE against whether the
answer decoded from the context it judged is right (WideLossConfig.critic).

Argument: as for experiments/wide.py ("smoke", route=..., steps=..., seed=..., max_iters=...,
min_iters=..., halt_warmup=..., prior_floor=...); the defaults include its fix against the
gate's collapse (halt_warmup=200, prior_floor=0.25).
Run time (2-core CPU shared with other sessions, measured 2026-12-01): 5.0 min (800 steps,
then eval on 512 test problems).
Result: accuracy 0.19 (1-digit 0.66), 0.92 lobe calls per example (0.67 / 1.02 / 1.00 / 1.00
for 1 / 2 / 3 / 4 digits), nearly all to the left lobe (the score lobe gets 1.5% of the
gate's calls). With the warm-up alone (:prior_floor=0) 0.25 and 1.00 / 1.27 / 1.24 / 1.14
calls; without the fix 0.08 and 0 calls (docs/results.md).
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
