r"""python -m slnjax.main --config experiments/wide.py --workdir /tmp/wide_e

Ablation row E: a wide SLN on multi-digit addition, from scratch. A 2-block byte-level LM is
lobotomised (block 1 encodes, block 2 decodes); between them a main gate routes up to
`max_iters` times per example to a left or a right MoE lobe (4 experts, top-1, Switch load
balancing), each call appending 2 slots to the context, until the gate says "output".
The gate is trained through the halting distribution (route "soft": PonderNet's expected
loss, with its geometric prior and a small compute cost). Against the collapse measured
without them (the gate settled on one number of calls for every example within 100 steps,
0 with seed 0, so the decoder never learnt to read lobe slots), the first halt_warmup=200
steps make every lobe call, and the answer loss keeps weight prior_floor=0.25 on the prior
over numbers of calls so that the answer after each number of calls stays trained
(slnjax/wide/loss.py). Evaluation (test split, greedy): accuracy, iterations used and
expert usage per difficulty (= digits of the longer operand).

Argument (after the colon): "smoke" (a seconds-long run for tests) and/or key=value pairs
among route, steps, seed, max_iters, min_iters, halt_warmup, prior_floor (e.g.
experiments/wide.py:route=hard,steps=300; :halt_warmup=0,prior_floor=0 is the config
without the fix; :min_iters=4 forces every lobe call).
Run time (2-core CPU shared with other sessions, measured 2026-12-01): 4.4 min (800 steps,
then eval on 512 test problems); route=hard 4.7 min.
Result: the gate now calls the lobes, and calls them more on harder inputs: lobe calls per
example 1.00 / 1.13 / 1.05 / 1.30 for 1 / 2 / 3 / 4 digits (seed 0; seed 1: 0.01 / 0.25 /
0.34 / 0.32), where without the fix every example got the same number (0 with seed 0, ~1
with seed 1). Routing does not help accuracy at 800 steps: 0.23 (seed 1: 0.22) against
0.25 / 0.24 without the fix and 0.22 with all 4 calls forced; only 1-digit sums are learnt
(0.8), 2-digit ones at 0.02-0.09. route=hard halts at once after the warm-up (0 calls,
accuracy 0.27): its 1/0 reward is ~0 for every choice, so the compute cost decides. Every
row and the expert shares: docs/results.md.
slnjax.main checkpoints to <workdir>/checkpoints (and resumes from them), logs metrics.jsonl
and TensorBoard events, and evaluates every eval_every steps and at the end (eval/accuracy,
eval/iters/d<k>, eval/experts_left/<e>, ...).
"""
from ml_collections import config_dict

from experiments import common

KIND = "wide"
MIN_ITERS = 0  # model.wide.min_iters
HALT_WARMUP = 200  # objective.halt_warmup (training steps that make every lobe call)
PRIOR_FLOOR = 0.25  # objective.prior_floor (the prior's weight in the answer loss)


ARG_KEYS = ("route", "steps", "seed", "max_iters", "min_iters", "halt_warmup", "prior_floor")
FLOAT_KEYS = ("prior_floor",)


def parse_arg(arg):
  smoke, kv = False, {}
  for item in filter(None, (arg or "").split(",")):
    if item.strip(":") == "smoke":
      smoke = True
      continue
    key, sep, value = item.partition("=")
    if not sep or key not in ARG_KEYS:
      raise ValueError(f"Config argument {item!r}: expected 'smoke' or key=value with key in "
                       f"{', '.join(ARG_KEYS)}.")
    if key == "route":
      kv[key] = value
      continue
    kind = float if key in FLOAT_KEYS else int
    try:
      kv[key] = kind(value)
    except ValueError:
      raise ValueError(f"Config argument {item!r}: {key} takes "
                       f"{'a number' if kind is float else 'an integer'}.") from None
  return smoke, kv


def make(kind: str, arg=None, **wide_kw) -> config_dict.ConfigDict:
  smoke, kv = parse_arg(arg)
  wide = dict(k_in=1, k_out=1, max_iters=kv.get("max_iters", 4), write_len=2,
              min_iters=kv.get("min_iters", MIN_ITERS), n_experts=4, top_k=1,
              route=kv.get("route", "soft"), answer_len=6, **wide_kw)
  overrides = dict(name="wide_digits4", train_digits=(1, 4), longer_digits=(5, 6),
                   num_train=20000, num_test=512, num_test_longer=64)
  objective = dict(ponder_kl=0.01, prior_lambda=0.3, compute_cost=0.01, balance=0.01,
                   critic=1.0, reward="correct", halt_warmup=kv.get("halt_warmup", HALT_WARMUP),
                   prior_floor=kv.get("prior_floor", PRIOR_FLOOR))
  left = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128)
  batch_size, steps, log_every = 32, kv.get("steps", 800), 100
  if smoke:
    overrides.update(name="wide_smoke", num_train=128, num_test=16, num_test_longer=8)
    batch_size, steps, log_every = 8, 2, 1
    left.update(d_model=16, d_ff=32)
    wide.update(max_iters=2, n_experts=2, min_iters=min(wide["min_iters"], 2))
    if "halt_warmup" not in kv:  # the warm-up ends after step 1 of 2: both phases run
      objective["halt_warmup"] = min(objective["halt_warmup"], 1)
  c = common.experiment(
      kind, "wide", seed=kv.get("seed", 0),
      task=dict(name="addition", config="digits5", data_dir="/tmp/slnjax_data",
                overrides=overrides),
      batch_size=batch_size, prompt_len=12, target_len=6, steps=steps, log_every=log_every,
      model=dict(left=left, wide=wide), objective=objective,
      optim=dict(left=dict(lr=3e-3, warmup_steps=50), right=dict(lr=3e-3, warmup_steps=50)),
      tau=dict(start=1.0, end=0.5, schedule="linear"), eval=dict(num_batches=-1))
  with c.unlocked():
    c.model.right = None  # the right lobe is an expert lobe of the LM's width (model.wide)
  return c


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  return make(KIND, arg)
