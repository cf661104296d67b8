"""The train step (one jitted function per procedure) and the train loop.

    ts = make_train_step(config, mesh)          # also what the AOT tool compiles
    state = ts.init_fn(jax.random.PRNGKey(seed))  # created already sharded
    rollout = ts.rollout_fn(state, batch)       # objectives with a rollout (no gradient)
    state, metrics = ts.step_fn(state, batch[, rollout])   # state donated

A step: key = fold_in(state.rng, step) split into a rollout key and an update key; the
objective's loss is differentiated with respect to the trainable lobes only (each with its
own optimizer); ``inner_steps`` updates run inside the step (a while_loop that also stops
when ``inner_done(metrics)`` holds). A NaN/inf loss, gradient or updated parameter leaves the
parameters and optimizer states unchanged and records the step in state["nonfinite"]; the
loop checks it whenever it logs or saves, and stops with a message (no checkpoint is written
after it; slnjax/resume.py: interruptions, resumes, the NaN stop).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from ml_collections import config_dict

from slnjax import checkpoint, data, eval_report, evaluate, evaluate_wide, metrics as metrics_lib
from slnjax import objectives, parallel, resume, train_flops
from slnjax import build, config as cfg, finalize
from slnjax import state as state_lib

BATCH_AXES = ("data", "fsdp")
BATCH_KEYS_BP = ("prompt_ids",)
BATCH_KEYS_B = ("prompt_len", "target_len", "difficulty", "index", "valid")
BATCH_KEYS_BT = ("ids", "prompt_mask", "loss_mask")


NonFiniteError = resume.NonFiniteError


class TrainStep(NamedTuple):
  init_fn: Callable  # rng -> state (jit, out_shardings=state_shardings)
  step_fn: Callable  # (state, batch[, rollout]) -> (state, metrics); state donated
  state_shardings: Any
  batch_shardings: dict
  abstract_state: Any  # ShapeDtypeStructs with shardings
  abstract_batch: dict  # ShapeDtypeStructs with shardings
  rollout_fn: Callable | None  # (state, batch) -> rollout pytree (no gradient); or None
  abstract_rollout: Any  # incl. reward_NB for verifier rewards; None without a rollout
  model: Any  # sln.SLN
  objective: objectives.Objective
  mesh: Any
  rules: tuple


def _inner_steps(obj: objectives.Objective, ocfg) -> int:
  n = obj.inner_steps
  return int(ocfg[n]) if isinstance(n, str) else int(n)


def _inner_done(obj: objectives.Objective, m: dict) -> jax.Array:
  """The objective's early exit, evaluated inside the jitted step (no host round trip)."""
  if obj.inner_done is None:
    return jnp.zeros((), bool)
  try:
    return jnp.asarray(obj.inner_done(m), bool).reshape(())
  except jax.errors.ConcretizationTypeError as e:
    raise TypeError(f"objective {obj.name!r}: inner_done runs inside the jitted train step, so "
                    f"it must return a traced boolean (e.g. metrics['x'] > 0.5), not call "
                    f"float()/bool() on a metric.") from e


def _rules_ctx(mesh, rules):
  """Mesh + logical rules for the lobes' activation constraints, usable inside jit."""
  stack = contextlib.ExitStack()
  stack.enter_context(jax.sharding.use_abstract_mesh(mesh.abstract_mesh))
  stack.enter_context(nn.logical_axis_rules(list(rules)))
  return stack


def make_train_step(config: config_dict.ConfigDict, mesh) -> TrainStep:
  model = build.build_model(config)
  obj = objectives.get(config.objective.name)
  ocfg = config_dict.FrozenConfigDict(config.objective)
  rules = parallel.rules_from_config(config.mesh.rules or None)
  lobes = state_lib.trainable_lobes(model)
  optimizers = {n: state_lib.make_optimizer(config.optim[n], config.steps) for n in lobes}
  schedules = {n: state_lib.lr_schedule(config.optim[n], config.steps) for n in lobes}
  n_inner = _inner_steps(obj, ocfg)
  refresh = int(ocfg.refresh_every) if "prev" in obj.frozen_copies else 0
  if n_inner < 1:
    raise ValueError(f"objective {obj.name!r}: inner_steps={n_inner} must be >= 1.")

  batch_ways = int(np.prod([mesh.shape[a] for a in BATCH_AXES if a in mesh.shape]))
  if config.batch_size % batch_ways or config.batch_size % jax.process_count():
    raise ValueError(f"config.batch_size={config.batch_size} must be a multiple of the mesh's "
                     f"batch ways ({batch_ways} = data x fsdp) and of the process count "
                     f"({jax.process_count()}).")

  init = functools.partial(state_lib.init_state, model, optimizers, obj.frozen_copies)
  abstract = jax.eval_shape(init, jax.ShapeDtypeStruct((2,), jnp.uint32))
  st_sh = state_lib.shardings(abstract, model, optimizers, mesh, rules)
  abstract_state = state_lib.with_shardings(abstract, st_sh)
  rep = parallel.replicated(mesh)
  b_sh = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
  B, P, M = config.batch_size, config.prompt_len, build.target_len(config)
  shapes = {**{k: (B, P) for k in BATCH_KEYS_BP}, **{k: (B,) for k in BATCH_KEYS_B},
            **{k: (B, P + M) for k in BATCH_KEYS_BT}, "target_ids": (B, M)}
  bank = build.bank_shape(config)
  if bank is not None:  # the examples' memory banks (slnjax/data/bank.py)
    C, L = bank
    shapes.update(memory_ids=(B, C, L), memory_len=(B, C), memory_mask=(B, C),
                  memory_relevant=(B, C))
  abstract_batch = {k: jax.ShapeDtypeStruct(s, jnp.int32, sharding=b_sh) for k, s in shapes.items()}
  batch_sh = {k: b_sh for k in shapes}

  def context(st):
    t = st["step"]
    k_roll, k_upd = jax.random.split(jax.random.fold_in(st["rng"], t))
    ctx = objectives.Context(model, ocfg, t, state_lib.tau_at(config.tau, config.steps, t))
    return ctx, k_roll, k_upd

  def update(ctx, key, frozen, batch, rollout, params, opt):
    fixed = {n: jax.lax.stop_gradient(p) for n, p in params.items() if n not in lobes}

    def loss_fn(train_params):
      loss, m = obj.loss(ctx, {**fixed, **train_params}, frozen, batch, rollout, key)
      return loss.astype(jnp.float32), m

    (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)({n: params[n] for n in lobes})
    new_params, new_opt = dict(params), {}
    m = {**{k: jnp.asarray(v, jnp.float32) for k, v in m.items()}, "loss": loss}
    ok = jnp.isfinite(loss)
    for n in lobes:
      updates, new_opt[n] = optimizers[n].update(grads[n], opt[n], params[n])
      new_params[n] = optax.apply_updates(params[n], updates)
      m[f"grad_norm/{n}"] = optax.global_norm(grads[n]).astype(jnp.float32)
      ok &= jnp.isfinite(m[f"grad_norm/{n}"])
      ok &= jax.tree.reduce(lambda a, x: a & jnp.isfinite(x).all(), new_params[n], True)
    return new_params, new_opt, m, ok

  def step(st, batch, rollout=None):
    with _rules_ctx(mesh, rules):
      ctx, _, k_upd = context(st)
      t, frozen = st["step"], st["frozen"]
      run = lambda i, p, o: update(dataclasses.replace(ctx, inner=i), jax.random.fold_in(k_upd, i),
                                   frozen, batch, rollout, p, o)
      if n_inner == 1:
        params, opt, m, ok = run(0, st["params"], st["opt"])
      else:
        m0 = jax.eval_shape(lambda: run(0, st["params"], st["opt"])[2])
        m0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m0)

        def cond(c):
          return (c[0] < n_inner) & ~c[5]

        def body(c):
          i, p, o, _, ok_, _ = c
          p, o, m_, ok_i = run(i, p, o)
          done = _inner_done(obj, m_)
          return i + 1, p, o, m_, ok_ & ok_i, done

        i, params, opt, m, ok, _ = jax.lax.while_loop(
            cond, body, (jnp.int32(0), st["params"], st["opt"], m0, jnp.bool_(True),
                         jnp.bool_(False)))
        m["inner_updates"] = i.astype(jnp.float32)
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
      params, opt = keep(params, st["params"]), keep(opt, st["opt"])
      if refresh:
        due = (t + 1) % refresh == 0
        frozen = {**frozen, "prev": jax.tree.map(lambda a, b: jnp.where(due, a, b), params,
                                                 frozen["prev"])}
      m["tau"] = ctx.tau
      for n in lobes:
        m[f"lr/{n}"] = jnp.asarray(schedules[n](t), jnp.float32)
      bad = jnp.where((st["nonfinite"] < 0) & ~ok, t, st["nonfinite"])
      new = {"step": t + 1, "rng": st["rng"], "params": params, "opt": opt, "frozen": frozen,
             "nonfinite": bad}
      return new, m

  def rollout(st, batch):
    with _rules_ctx(mesh, rules):
      ctx, k_roll, _ = context(st)
      return obj.rollout_fn(ctx, st["params"], st["frozen"], batch, k_roll)

  init_fn = jax.jit(init, out_shardings=st_sh)
  rollout_fn = abstract_rollout = None
  if obj.rollout_fn is None:
    step_fn = jax.jit(step, in_shardings=(st_sh, batch_sh), out_shardings=(st_sh, rep),
                      donate_argnums=0)
  else:
    step_fn = jax.jit(step, in_shardings=(st_sh, batch_sh, None), out_shardings=(st_sh, rep),
                      donate_argnums=0)
    rollout_fn = jax.jit(rollout, in_shardings=(st_sh, batch_sh))
    abstract_rollout = jax.eval_shape(rollout_fn, abstract_state, abstract_batch)
    if obj.reward == "verifier":
      abstract_rollout = {**abstract_rollout, "reward_NB": jax.ShapeDtypeStruct(
          abstract_rollout["active_NB"].shape, jnp.float32,
          sharding=NamedSharding(mesh, PartitionSpec(None, BATCH_AXES)))}
  return TrainStep(init_fn, step_fn, st_sh, batch_sh, abstract_state, abstract_batch,
                   rollout_fn, abstract_rollout, model, obj, mesh, rules)


def compiled_memory(ts: TrainStep) -> dict:
  """Compiled memory of the step (bytes): temp, argument, output and their sum."""
  args = (ts.abstract_state, ts.abstract_batch)
  if ts.rollout_fn is not None:
    args += (ts.abstract_rollout,)
  ma = ts.step_fn.lower(*args).compile().memory_analysis()
  out = {k: int(getattr(ma, f"{k}_size_in_bytes", 0)) for k in ("temp", "argument", "output")}
  out["total"] = out["temp"] + out["argument"] + out["output"]
  return out


def task_config(config):
  """The task's builder config as slnjax.data takes it (None, a name, or base + fields)."""
  overrides = config.task.overrides.to_dict()
  if overrides:
    return {"base": config.task.config or None, **overrides}
  return config.task.config or None


def load_sources(config) -> tuple[Any, Any]:
  """(train source, eval source); process 0 builds the dataset first if needed."""
  name, data_dir, tcfg = config.task.name, config.task.data_dir or None, task_config(config)
  if jax.process_index() == 0:
    data.ensure_built(name, data_dir, tcfg)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("slnjax dataset built")
  split, _ = cfg.eval_config(config)
  return (data.load_source(name, config.task.train_split, data_dir, tcfg),
          data.load_source(name, split, data_dir, tcfg))


def _start_from(ts: TrainStep, st: dict, source: str) -> dict:
  """Replaces the fresh parameters (and frozen copies) with another run's."""
  loaded = checkpoint.load_params(source, ts.abstract_state["params"])
  copy = jax.jit(lambda t: jax.tree.map(jnp.copy, t),
                 out_shardings={n: ts.state_shardings["params"][n] for n in loaded})
  params = {**st["params"], **loaded}
  frozen = {k: {**v, **copy(loaded)} for k, v in st["frozen"].items()}
  return {**st, "params": params, "frozen": frozen}


def _evaluate(evaluator, st, step: int, config, writer, split: str = "eval") -> dict:
  """An evaluation at ``step``: logged as ``split`` (transcripts: the periodic one's only),
  and returned prefixed "<split>/"."""
  tau = state_lib.tau_at(config.tau, config.steps, step - 1)
  em, text = evaluator(st["params"], step, tau)
  writer.write(step, em, split=split)
  if split == "eval":
    writer.text(step, "transcripts", text)
  return {f"{split}/{k}": v for k, v in em.items()}


def train(config: config_dict.ConfigDict, workdir: str, mesh=None, *,
          train_step: TrainStep | None = None, allow_schedule_change: bool = False) -> dict:
  """Trains (resuming from the newest intact checkpoint in <workdir>/checkpoints, if any);
  returns the final metrics (train metrics of the last log, eval metrics prefixed "eval/";
  "preempted": 1.0 when SIGTERM/SIGINT stopped it early). ``train_step``: a
  make_train_step(config, mesh) result to reuse (its compiled functions).
  ``allow_schedule_change``: resume even if the learning-rate or tau schedule of the steps
  still to run differs from the checkpoint's (resume.check_schedule)."""
  interrupt = resume.Interrupt()  # from the start: a signal during setup stops before step 1
  try:
    return _train(config, workdir, mesh, train_step, allow_schedule_change, interrupt)
  finally:
    interrupt.restore()


def _train(config, workdir, mesh, train_step, allow_schedule_change, interrupt) -> dict:
  config = finalize.finalize(config)  # the one finalized config, handed down from here
  if data.get_task(config.task.name).executes_code:  # before any model-written program runs
    data.require_sandbox(config.task.allow_unsandboxed_code)
  ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints)
  writer = None
  try:
    model = train_step.model if train_step is not None else build.build_model(config)
    schedule = functools.partial(
        resume.check_schedule, config=config, lobes=state_lib.trainable_lobes(model),
        allow=allow_schedule_change,
        updates_per_step=_inner_steps(objectives.get(config.objective.name), config.objective))
    if not allow_schedule_change:  # refuse before the slow setup; again once restored
      resume.check_schedule_early(ckpt, schedule)
    if train_step is not None:
      mesh = train_step.mesh
    mesh = mesh or parallel.make_mesh(tuple(config.mesh.ici), tuple(config.mesh.dcn))
    ts = train_step or make_train_step(config, mesh)
    tokenizer = data.load_tokenizer(config.task.tokenizer or None)
    train_source, eval_source = load_sources(config)
    B, P, M = config.batch_size, config.prompt_len, build.target_len(config)
    ds = data.make_dataset(train_source, tokenizer, batch_size=data.per_process_batch_size(B),
                           prompt_len=P, target_len=M, seed=config.seed, shuffle=True,
                           bank=build.bank_shape(config))
    it = iter(ds)
    found = resume.restore_latest(ckpt, ts.abstract_state, it)  # checks shapes before writing
    if found is not None:
      start, st, it, saved = found
      schedule(saved, step=start)
      resume.say(f"resumed from step {start} (checkpoint {ckpt.directory}/{start})")
    else:
      start, st = 0, ts.init_fn(jax.random.PRNGKey(config.seed))
      if config.init_from:
        st = _start_from(ts, st, config.init_from)
      elif any(dict(config.get("pretrained") or {}).values()):
        raise ValueError("config.pretrained is set but config.init_from is empty (random "
                         "lobes): run python -m slnjax.import_hf --config <this config> --out "
                         "DIR, then pass --config.init_from=DIR.")
    lead = jax.process_index() == 0
    if lead:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    writer = metrics_lib.Writer(workdir, enabled=lead, start_step=start,
                                total_steps=config.steps)
    flop_ledger = train_flops.Ledger.open(workdir, config, start, enabled=lead)
    make_evaluator = evaluate_wide.WideEvaluator if build.is_wide(config) else evaluate.Evaluator
    evaluator = make_evaluator(config, ts.model, mesh, ts.rules, tokenizer, eval_source,
                               workdir) if config.eval_every else None
    final_evaluator = None
    if config.eval.final_split:  # e.g. the test split, once, after the last step
      final_source = data.load_source(config.task.name, config.eval.final_split,
                                      config.task.data_dir or None, task_config(config))
      final_evaluator = make_evaluator(config, ts.model, mesh, ts.rules, tokenizer,
                                       final_source, os.path.join(workdir, "final"))
    verifier = ts.objective.reward == "verifier"
    timer = metrics_lib.Timer(start)
    out, step, evaluated = {"step": start}, start, False
    if interrupt.signal is not None:  # during setup: nothing new to save
      resume.say(f"{interrupt.name}: stopped before training (nothing new to save).")
      out["preempted"] = 1.0
    while step < config.steps and "preempted" not in out:
      batch = data.global_batch(next(it), mesh)
      r = None
      if step == start:
        t0 = time.perf_counter()
        writer.note("compiling the train step (the first step waits for it) ...")
      if ts.rollout_fn is None:
        st, m = ts.step_fn(st, batch)
      else:
        r = ts.rollout_fn(st, batch)
        if verifier:
          r = {**r, "reward_NB": evaluate.verifier_reward(r, batch, config.task.name,
                                                          train_source, tokenizer, mesh)}
        st, m = ts.step_fn(st, batch, r)
      step += 1
      if step == start + 1:  # rates exclude compilation: time from the first step's end
        jax.block_until_ready(m)
        writer.note(f"compiled the train step and ran step {step} in "
                    f"{time.perf_counter() - t0:.1f} s")
        timer = metrics_lib.Timer(step)
      final = step == config.steps
      term = interrupt.reached(step, ckpt)
      log_now = step % config.log_every == 0 or final or term
      eval_now = bool(evaluator) and (step % config.eval_every == 0 or final)
      save_now = term or (config.checkpoint_every and (step % config.checkpoint_every == 0
                                                       or final))
      if log_now or eval_now or save_now:
        resume.check_finite(st, step, ckpt)
      if log_now:
        out = {"step": step, **metrics_lib.to_python(m), **timer.rates(step, B * (P + M)),
               **flop_ledger.metrics(step)}
        flop_ledger.write(step)
        if r is not None and isinstance(r, dict):  # turns, critic accuracy of this rollout
          out.update(evaluate.rollout_metrics(ts.model, r, batch, config.task.name,
                                              train_source, tokenizer))
        writer.write(step, {k: v for k, v in out.items() if k != "step"})
      if eval_now:
        if not evaluated:
          writer.note(f"evaluating at step {step} (the first evaluation compiles its decoding) ...")
        evaluated = True
        out.update(_evaluate(evaluator, st, step, config, writer))
      if final and final_evaluator:  # e.g. the test split, once
        out.update(_evaluate(final_evaluator, st, step, config, writer, split="final"))
      if save_now:
        ckpt.save(step, st, it, config)
        flop_ledger.write(step)
      if term:
        resume.say(f"{interrupt.name}: saved a checkpoint at step {step} in {ckpt.directory}.")
        out["preempted"] = 1.0
    if start >= config.steps and evaluator:  # a finished run, started again: evaluate
      out.update(_evaluate(evaluator, st, step, config, writer))
    if step >= config.steps and config.eval.report and "preempted" not in out:
      eval_report.evaluate_checkpoint(config, ts.model, st["params"], mesh, ts.rules, tokenizer,
                                      workdir, step, sources={cfg.eval_config(config)[0]:
                                                              eval_source})
    writer.flush()
  finally:
    ckpt.close()
    if writer is not None:
      writer.close()
  out["step"] = step
  return out
