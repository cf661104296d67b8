"""The train state (a plain pytree), its optimizers, schedules and shardings.

    state = {
      "step": int32 [],            # training batches done
      "rng": uint32 [2],           # base key; each step uses fold_in(rng, step)
      "params": {"left": ..., "right": ...},    # sln.init layout (wide SLNs too)
      "opt": {lobe: optax state}   # one optimizer per trainable lobe (own settings)
      "frozen": {"ref"|"prev": params copy},     # what the objective asked for
      "nonfinite": int32 [],       # first step whose loss/gradient was NaN/inf, else -1
    }
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from ml_collections import config_dict

from slnjax import parallel, sln


def trainable_lobes(model: sln.SLN) -> tuple[str, ...]:
  return tuple(n for n in model.lobe_names if n in model.trainable)


def lr_schedule(o: config_dict.ConfigDict, steps: int) -> optax.Schedule:
  """Linear warmup from 0 to ``lr``, then constant / cosine / linear to lr * end_lr_frac."""
  warm = int(o.warmup_steps)
  decay = max(int(steps) - warm, 1)
  end = o.lr * o.end_lr_frac
  if o.schedule == "constant":
    after = optax.constant_schedule(o.lr)
  elif o.schedule == "cosine":
    after = optax.cosine_decay_schedule(o.lr, decay, alpha=o.end_lr_frac)
  else:
    after = optax.linear_schedule(o.lr, end, decay)
  if warm == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, o.lr, warm), after], [warm])


def make_optimizer(o: config_dict.ConfigDict, steps: int) -> optax.GradientTransformation:
  parts = [optax.clip_by_global_norm(o.clip_norm)] if o.clip_norm > 0 else []
  parts.append(optax.adamw(lr_schedule(o, steps), b1=o.b1, b2=o.b2, eps=o.eps,
                           weight_decay=o.weight_decay))
  return optax.chain(*parts)


def tau_at(t: config_dict.ConfigDict, steps: int, step) -> jax.Array:
  """The soft-token temperature at ``step`` (float32 scalar)."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(int(steps) - 1, 1), 0.0, 1.0)
  a, b = jnp.float32(t.start), jnp.float32(t.end)
  if t.schedule == "constant":
    return a
  if t.schedule == "linear":
    return a + (b - a) * frac
  if t.schedule == "cosine":
    return b + (a - b) * 0.5 * (1 + jnp.cos(jnp.pi * frac))
  return a * (b / a) ** frac  # exponential (geometric)


def init_state(model: sln.SLN, optimizers: dict, frozen_names, rng) -> dict:
  """A fresh state from ``rng`` (a raw uint32[2] key). Call under jit with out_shardings."""
  k_params, k_train = jax.random.split(rng)
  params = sln.init(model, k_params)
  copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)
  return {
      "step": jnp.zeros((), jnp.int32),
      "rng": k_train,
      "params": params,
      "opt": {n: optimizers[n].init(params[n]) for n in optimizers},
      "frozen": {name: copy(params) for name in frozen_names},
      "nonfinite": jnp.full((), -1, jnp.int32),
  }


def shardings(abstract_state: dict, model: sln.SLN, optimizers: dict, mesh, rules) -> dict:
  """NamedShardings for every leaf: parameters (and their optimizer moments and frozen
  copies) as the logical rules say; scalars and keys replicated."""
  rep = parallel.replicated(mesh)
  param_sh = parallel.logical_sharding(sln.logical_axes(model), mesh, rules)
  opt_sh = {n: optax.tree_map_params(optimizers[n], lambda _, s: s, abstract_state["opt"][n],
                                     param_sh[n], transform_non_params=lambda _: rep)
            for n in optimizers}
  return {"step": rep, "rng": rep, "params": param_sh, "opt": opt_sh,
          "frozen": {k: param_sh for k in abstract_state["frozen"]}, "nonfinite": rep}


def with_shardings(abstract, shardings_tree):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings_tree)
