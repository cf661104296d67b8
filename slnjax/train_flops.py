"""Training FLOPs: per train step from the config's shapes, and the run's running total.

    step_flops(config)          FLOPs of one train step (None for the wide kinds)
    ledger = Ledger.open(workdir, config, start_step)    in train.train
    ledger.metrics(step)        {"train_flops": total, "train_flops_per_step": ...}
    ledger.write(step)          <workdir>/train_flops.json, with every log and checkpoint
    run_total(workdir)          the total a finished (or stopped) run reached, or None

A step's count is built from slnjax/flops.py's forward counts at the config's padded shapes
(batch_size rows, prompt_len, target_len, max_turns), per objective:
- a pass with a gradient costs 3x its forward (forward + backward ~ 2x forward), 4x when
  a lobe rematerialises its blocks (LobeConfig.remat); a differentiated dialogue (``unroll``:
  bptt, gan) adds one more forward for the loop's recompute (bptt_impl appendonly or
  scan_remat) and counts every one of max_turns turns (a scan with done-masks runs them all);
- a rollout without a gradient (``sample``: critic_bce, actor_critic_td, reinforce, rloo,
  ppo, spin, verifier_critic, revision_sft, revision_rl; inside the loss for self_play) is
  one dialogue forward at max_turns turns: an
  upper bound, since the rollout stops when every example of the batch has halted;
- teacher-forced passes at their full width: SFT over prompt + target, the replay of a
  rollout (``loop.replay_logp``) over the left lobe's whole dialogue cache, the critic over
  prompt + answer (positives) and prompt + each turn (negatives), a frozen reference's or
  previous iterate's pass forward only;
- inner updates (PPO epochs, self-play) at their limit ``inner_steps`` (self-play may stop
  earlier); terms weighted 0 on later epochs (the critic's) are still computed, so counted.
A loop-free step (sft; critic_bce with its rollout) is within 2-4% of XLA's cost analysis
of the compiled step at batch 64 (tests/test_train_flops.py; XLA also counts the optimizer
and elementwise work). Not counted: the optimizer update, evaluation during training, the memory selector, and the
host's verifier. The wide kinds (rows E, G) are not counted (``step_flops`` returns None).

The ledger (``train_flops.json``) keeps segments {start, per_step} so that a total is exact
at any step: on resume from checkpoint step s, segments after s are dropped (steps trained
after the last checkpoint and lost are not counted) and a new segment starts at s. A run
started with ``config.init_from`` inherits the total of that run at its latest checkpoint
(the parameters it starts from), so a recipe's stages add up (SFT then RL).
"""
from __future__ import annotations

import json
import logging
import os

from slnjax import build, flops, objectives

FILENAME = "train_flops.json"
COUNTED = ("sft", "bptt", "gan", "critic_bce", "actor_critic_td", "reinforce",
           "reinforce_verifier", "rloo", "rloo_verifier", "ppo", "ppo_verifier", "self_play",
           "spin", "verifier_critic", "revision_sft", "revision_rl")


def _lobe_grad_factor(*lobe_cfgs) -> int:
  return 4 if any(c is not None and c.remat != "none" for c in lobe_cfgs) else 3


def _per_example(config, model) -> float:
  """Training FLOPs of one batch row (see the module docstring)."""
  name = config.objective.name
  hp = objectives.hparams(objectives.get(name), config.objective)
  spec = model.spec
  lc, rc, L = spec.left, spec.right, spec.loop
  P, M, N, m = config.prompt_len, build.target_len(config), L.max_turns, L.turn_len
  F = flops.lobe_forward_flops
  g = _lobe_grad_factor(lc, rc, model.encoder)
  dialogue = float(flops.dialogue_flops(model, N, P)[()])
  unroll = (g + (1 if L.bptt_impl in ("appendonly", "scan_remat") else 0)) * dialogue
  if L.bptt_depth is not None and L.bptt_impl != "appendonly":
    unroll += dialogue  # the rollout that learns the turns used first
  left_seq = F(lc, P + M, 0)
  replay = F(lc, spec.cache_lengths(P)[0], 0)
  critic = lambda rollouts: 0.0 if not spec.scored else (
      F(rc, P + M, 0, logit_rows=0) + rollouts * N * F(rc, P + m, 0, logit_rows=0))
  inner = lambda key: int(hp[key])
  if name == "sft":
    right = F(rc, P + M, 0) if hp["right_weight"] else 0
    return g * (left_seq + right)
  if name == "bptt":
    return unroll + (g * critic(1) if hp["critic_weight"] else 0)
  if name == "gan":  # real and fake (twice: the discriminator's and the generator's term)
    return unroll + g * (F(rc, P + M, 0, logit_rows=0) + 2 * F(rc, P + m, 0, logit_rows=0))
  if name == "critic_bce":
    return dialogue + g * critic(1)
  if name == "actor_critic_td":
    return dialogue + g * (replay + critic(1))
  if name in ("reinforce", "reinforce_verifier", "rloo", "rloo_verifier"):
    k = int(hp.get("samples", 1))
    return k * dialogue + g * (k * replay + (critic(k) if hp["critic_weight"] else 0))
  if name in ("ppo", "ppo_verifier"):
    epoch = g * replay + (replay if hp["kl_coef"] else 0) + (
        g * critic(1) if hp["critic_weight"] else 0)
    return dialogue + inner("inner_steps") * epoch
  if name == "self_play":
    return inner("inner_steps") * (dialogue + g * (replay + (critic(1) if hp["critic_weight"]
                                                               else 0)))
  if name == "verifier_critic":  # every turn of `samples` rollouts through the critic
    k = int(hp["samples"])
    return k * dialogue + g * k * N * F(rc, P + m, 0, logit_rows=0)
  if name == "revision_sft":  # a rollout (under "prev"), the built dialogue's replay
    return dialogue + g * replay
  if name == "revision_rl":  # `samples` rollouts, their replay, the reference's (turn-1 KL)
    k = int(hp["samples"])
    return k * dialogue + g * k * replay + (k * replay if hp["beta"] else 0)
  if name == "spin":  # true answer and every turn, under theta (grad) and the previous iterate
    seqs = (1 + N) * F(lc, P + m, 0)
    return dialogue + (g + 1) * seqs + (g * critic(1) if hp["critic_weight"] else 0)
  raise ValueError(f"train_flops: no FLOP count for objective {name!r}; add it to "
                   f"slnjax/train_flops.py.")


def step_flops(config) -> float | None:
  """Training FLOPs of one train step of ``config``, or None for a wide SLN (not counted)
  or an objective without a count here (e.g. a test-only one)."""
  if build.is_wide(config) or config.objective.name not in COUNTED:
    return None
  return float(config.batch_size * _per_example(config, build.build_model(config)))


def _total(record: dict, step: int) -> float:
  total = float(record.get("inherited", 0.0))
  segs = record.get("segments", [])
  for i, s in enumerate(segs):
    end = min(step, segs[i + 1]["start"]) if i + 1 < len(segs) else step
    total += max(0, end - s["start"]) * float(s["per_step"])
  return total


def _read(workdir: str) -> dict | None:
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _latest_checkpoint(workdir: str) -> int | None:
  d = os.path.join(workdir, "checkpoints")
  steps = [int(n) for n in os.listdir(d) if n.isdigit()] if os.path.isdir(d) else []
  return max(steps) if steps else None


def run_total(workdir: str, step: int | None = None) -> float | None:
  """The training FLOPs a run had spent at ``step`` (None: its latest checkpoint, or the
  last step it logged when it kept none), stages it was initialised from included. None
  when the workdir has no ledger (a run from before the ledger, or a wide kind)."""
  workdir = os.path.abspath(workdir)
  if os.path.basename(workdir.rstrip("/")) == "checkpoints":
    workdir = os.path.dirname(workdir)
  rec = _read(workdir)
  if rec is None or rec.get("per_step") is None and not rec.get("segments"):
    return None
  if step is None:
    step = _latest_checkpoint(workdir)
    step = rec["step"] if step is None else min(step, rec["step"])
  return _total(rec, step)


class Ledger:
  """The run's training-FLOP segments (see the module docstring)."""

  def __init__(self, workdir: str, record: dict, enabled: bool = True):
    self.workdir, self.record, self.enabled = workdir, record, enabled

  @classmethod
  def open(cls, workdir: str, config, start_step: int, enabled: bool = True) -> "Ledger":
    per_step = step_flops(config)
    old = _read(workdir) if start_step else None
    if old is not None:
      segs = [s for s in old.get("segments", []) if s["start"] < start_step]
      rec = {**old, "segments": segs}
    else:
      rec = {"inherited": 0.0, "inherited_from": None, "segments": []}
      if start_step:
        logging.warning("train_flops: resuming at step %d without %s; the steps before it "
                        "are counted at this config's rate.", start_step, FILENAME)
        segs = [{"start": 0, "per_step": per_step}]
        rec["segments"] = segs if per_step is not None else []
      src = config.init_from
      if src:
        inherited = run_total(src)
        rec["inherited_from"] = os.path.abspath(src)
        if inherited is None:
          logging.warning("train_flops: %s has no %s; its training FLOPs are not included.",
                          src, FILENAME)
          rec["inherited_missing"] = True
        else:
          rec["inherited"] = inherited
    if per_step is not None and (not rec["segments"] or
                                 rec["segments"][-1]["per_step"] != per_step):
      rec["segments"].append({"start": int(start_step), "per_step": per_step,
                              "objective": config.objective.name})
    rec.update(per_step=per_step, step=int(start_step))
    ledger = cls(workdir, rec, enabled)
    ledger.write(start_step)
    return ledger

  def total(self, step: int) -> float | None:
    if self.record["per_step"] is None:
      return None
    return _total(self.record, step)

  def metrics(self, step: int) -> dict:
    """What the train loop logs: the running total and the per-step count."""
    if self.record["per_step"] is None:
      return {}
    return {"train_flops": self.total(step), "train_flops_per_step": self.record["per_step"]}

  def write(self, step: int) -> None:
    if not self.enabled:
      return
    self.record["step"] = int(step)
    self.record["total"] = self.total(step)
    os.makedirs(self.workdir, exist_ok=True)
    path = os.path.join(self.workdir, FILENAME)
    with open(path + ".tmp", "w") as f:
      json.dump(self.record, f, indent=2)
    os.replace(path + ".tmp", path)
