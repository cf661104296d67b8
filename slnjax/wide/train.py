r"""A minimal single-host trainer for wide SLNs (no mesh, no checkpoints, no metrics files).

    python -m slnjax.wide.train --config=experiments/wide.py[:smoke] --workdir=/tmp/wide

The full trainer is ``python -m slnjax.main`` (slnjax/train.py: mesh, orbax checkpoints and
resume, metrics.jsonl / TensorBoard, periodic evaluation); this one is a short loop over the
same config, model and objectives, kept for quick single-host runs. The objective is "wide"
or "wide_ppo" (slnjax/objectives/wide.py). Each lobe ("left": LM, gate and left expert lobe;
"right": the right expert lobe) has its own optimizer (slnjax.state.make_optimizer).
Evaluation at the end judges greedy while_loop answers with the task's verifier
(slnjax.evaluate_wide.judge) and summarises them per difficulty; <workdir>/results.json
holds it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from slnjax import build as cfg_lib
from slnjax import data, evaluate_wide, objectives, state
from slnjax import train as train_lib
from slnjax.objectives import wide as wide_objectives
from slnjax.wide.loop import rollout
from slnjax.wide.model import WideSLN, init
from slnjax.wide.report import UsageAccumulator


def load_config(spec: str):
  path, _, arg = spec.partition(":")
  mod_spec = importlib.util.spec_from_file_location("wide_experiment", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg or None)


def _batches(source, c, *, shuffle, epochs=None, seed=0):
  ds = data.make_dataset(source, data.ByteTokenizer(), batch_size=c.batch_size,
                         prompt_len=c.prompt_len, target_len=cfg_lib.target_len(c), seed=seed,
                         shuffle=shuffle, num_epochs=epochs, pad_final_batch=not shuffle,
                         overflow="truncate")
  for b in ds:
    yield {k: jnp.asarray(v) for k, v in b.items()}


def evaluate(model: WideSLN, params, source, c, tau) -> dict:
  tok = data.ByteTokenizer()
  run = jax.jit(lambda p, ids, plen, k: rollout(model, p, ids, plen, k, tau, mode="greedy",
                                                answer_len=cfg_lib.target_len(c)))
  acc = UsageAccumulator(model.cfg.n_experts, model.cfg.max_iters)
  for i, b in enumerate(_batches(source, c, shuffle=False, epochs=1)):
    if 0 <= c.eval.num_batches <= i:
      break
    tr = run(params, b["prompt_ids"], b["prompt_len"], jax.random.key(i))
    valid = np.asarray(b["valid"]).astype(bool)
    ok = evaluate_wide.judge(c.task.name, source, tok, tr.answer_ids_BM, b["index"], valid)
    acc.add(tr, np.asarray(b["difficulty"]), valid, ok)
  return acc.summary()


def train(c, workdir: str, log=print) -> dict:
  t0 = time.time()
  model = cfg_lib.build_model(c)
  obj = objectives.get(c.objective.name)
  if obj not in (wide_objectives.WIDE, wide_objectives.WIDE_PPO):
    raise ValueError(f"objective {c.objective.name!r}: wide SLNs train with 'wide' or "
                     "'wide_ppo'.")
  ocfg = c.objective
  tcfg = train_lib.task_config(c)
  data.ensure_built(c.task.name, c.task.data_dir or None, tcfg)
  train_src = data.load_source(c.task.name, c.task.train_split, c.task.data_dir or None, tcfg)
  eval_src = data.load_source(c.task.name, c.eval.split or c.task.eval_split,
                              c.task.data_dir or None, tcfg)
  params = init(model, jax.random.key(c.seed))
  opts = {n: state.make_optimizer(c.optim[n], c.steps) for n in model.lobe_names}
  opt_state = {n: opts[n].init(params[n]) for n in opts}
  n_inner = int(ocfg["ppo_epochs"]) if obj.rollout_fn else 1

  def ctx_at(step):
    tau = state.tau_at(c.tau, c.steps, step)
    return objectives.Context(model, ocfg, step, tau)

  @jax.jit
  def update(params, opt_state, batch, key, step, roll):
    def lf(p):
      return obj.loss(ctx_at(step), p, {}, batch, roll, key)
    (loss, m), g = jax.value_and_grad(lf, has_aux=True)(params)
    new_p, new_o = {}, {}
    for n in opts:
      u, new_o[n] = opts[n].update(g[n], opt_state[n], params[n])
      new_p[n] = optax.apply_updates(params[n], u)
      m[f"grad_norm/{n}"] = optax.global_norm(g[n])
    return new_p, new_o, m

  roll_fn = jax.jit(lambda p, b, k, s: obj.rollout_fn(ctx_at(s), p, {}, b, k)) \
      if obj.rollout_fn else None
  it = _batches(train_src, c, shuffle=True, seed=c.seed)
  key = jax.random.key(c.seed + 1)
  hist = []
  for step in range(c.steps):
    b = next(it)
    k_roll, k_upd = jax.random.split(jax.random.fold_in(key, step))
    roll = roll_fn(params, b, k_roll, step) if roll_fn else None
    for i in range(n_inner):
      params, opt_state, m = update(params, opt_state, b, jax.random.fold_in(k_upd, i),
                                    jnp.int32(step), roll)
    if (step + 1) % c.log_every == 0 or step == 0:
      m = {k: float(v) for k, v in m.items()}
      hist.append({"step": step + 1, **m})
      log(f"step {step + 1}: " + " ".join(f"{k}={v:.3f}" for k, v in sorted(m.items()))
          + f" ({time.time() - t0:.0f}s)")
  res = evaluate(model, params, eval_src, c, state.tau_at(c.tau, c.steps, c.steps))
  res.update(steps=c.steps, seconds=round(time.time() - t0, 1), kind=c.model.kind,
             route=model.cfg.route, last_train=hist[-1] if hist else {})
  log(json.dumps(res))
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(res, f, indent=1)
  return res


def main(argv=None):
  ap = argparse.ArgumentParser(description="Train a wide SLN (single host).")
  ap.add_argument("--config", required=True, help="experiments/wide.py[:smoke]")
  ap.add_argument("--workdir", required=True)
  a = ap.parse_args(argv)
  train(load_config(a.config), a.workdir)


if __name__ == "__main__":
  main()
