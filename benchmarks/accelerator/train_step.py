"""Train step of a lateralized SLN: time, model FLOPs utilisation, peak memory.

The step is train.make_train_step's update, built here from the layers below it (train.py
pulls in ml_collections, grain and the data pipeline, none of which the GPU machine has):
the left lobe's teacher-forced NLL (objectives.sft.masked_nll) plus the critic's BCE of
eq. 7 (objectives.critic_bce.critic_loss: the right lobe scores the true answer and one
generated turn), differentiated with respect to both lobes, each with its own AdamW
(clip-by-global-norm 1.0, as state.make_optimizer builds it), and the step's non-finite
guard (parameters kept when the loss or a gradient is NaN/inf). Synthetic inputs: random
ids, prompt = a quarter of each sequence, the "generated" turn random too.

FLOPs (our formula): a matmul with weights W costs 2|W| per token forward and 4|W| backward,
so 6 N per token with N = the lobe's matmul weights (every >= 2-D parameter except the input
embedding, a row lookup); attention adds 2 x 2 T^2 H E per sequence and layer forward (q.k
and p.v over the full T x T square, which the lobe computes and then masks), x3 with the
backward. The left lobe makes one pass over [B,T], the critic two (true and generated).
Checked against XLA's cost_analysis (flops_check: of a scanned step XLA counts the layer body
once, so the count is extrapolated from 1- and 2-layer unrolled copies); with remat XLA's
count also holds the recomputation (hardware FLOPs).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.accelerator import device, shapes
from slnjax import lobes, sln
from slnjax.objectives import critic_bce, sft

CRITIC_HP = {"negatives": "final", "pgd": False, "c0": 1.0, "lam": 0.1}


def make_optimizer(lr=1e-4):
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=0.1))


def synthetic(cfg: lobes.LobeConfig, batch: int, length: int, seed: int = 0):
  """(batch dict, rollout dict): the shapes the objectives read."""
  rng = np.random.default_rng(seed)
  P = length // 4
  M = length - P
  ids = rng.integers(0, cfg.vocab_size, (batch, length)).astype(np.int32)
  mask = np.zeros((batch, length), np.int32)
  mask[:, P:] = 1
  b = {"ids": ids, "loss_mask": mask, "prompt_ids": ids[:, :P].copy(),
       "prompt_len": np.full((batch,), P, np.int32), "target_len": np.full((batch,), M, np.int32),
       "valid": np.ones((batch,), np.int32)}
  r = {"left_ids_NBM": rng.integers(0, cfg.vocab_size, (1, batch, M)).astype(np.int32),
       "left_valid_NBM": np.ones((1, batch, M), bool), "prompt_ids": b["prompt_ids"],
       "prompt_len": b["prompt_len"], "turns_B": np.ones((batch,), np.int32),
       "active_NB": np.ones((1, batch), bool), "batch_row": np.arange(batch, dtype=np.int32)}
  return b, r


def build(cfg: lobes.LobeConfig):
  """(model, optimizers, init(key) -> state, step(state, batch, rollout) -> (state, metrics))."""
  model = sln.build("lateralized", cfg)
  opts = {n: make_optimizer() for n in model.lobe_names}

  def init(key):
    params = sln.init(model, key)
    return {"params": params, "opt": {n: opts[n].init(params[n]) for n in opts}}

  def loss_fn(params, batch, rollout):
    pl, pr = sln.roles(model, params)
    mask_BT = batch["loss_mask"] * batch["valid"][:, None]
    nll, acc = sft.masked_nll(model.spec.left, pl, batch["ids"], mask_BT)
    closs, m = critic_bce.critic_loss(model, pr, batch, rollout, CRITIC_HP)
    return (nll + closs).astype(jnp.float32), {"nll": nll, "accuracy": acc, **m}

  def step(state, batch, rollout):
    params = state["params"]
    (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rollout)
    ok = jnp.isfinite(loss)
    new_p, new_o = {}, {}
    for n in opts:
      upd, new_o[n] = opts[n].update(grads[n], state["opt"][n], params[n])
      new_p[n] = optax.apply_updates(params[n], upd)
      m[f"grad_norm/{n}"] = optax.global_norm(grads[n]).astype(jnp.float32)
      ok &= jnp.isfinite(m[f"grad_norm/{n}"])
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    return {"params": keep(new_p, params), "opt": keep(new_o, state["opt"])}, {**m, "loss": loss}

  return model, opts, init, step


def matmul_weights(cfg: lobes.LobeConfig) -> int:
  """Weights that multiply every token: q, k, v, o and the MLP's matrices per layer, and the
  LM head (the input embedding is a row lookup; biases, norms and score heads are not
  products)."""
  D, E, F = cfg.d_model, cfg.hd, cfg.d_ff
  attn = D * E * (2 * cfg.n_heads + 2 * cfg.kv_heads)
  mlp = D * F * (3 if cfg.family == "llama" else 2)  # llama's MLP is gated: a third matrix
  return cfg.n_layers * (attn + mlp) + (D * cfg.vocab_size if cfg.lm_head else 0)


def model_flops(cfg: lobes.LobeConfig, batch: int, length: int) -> dict:
  """FLOPs of one step by the formula of the module docstring."""
  model = sln.build("lateralized", cfg)
  out = {}
  for name, passes in (("left", 1), ("right", 2)):
    c = model.lobe_config(name)
    n = matmul_weights(c)
    attn = 3 * 2 * 2 * length**2 * c.n_heads * c.hd * c.n_layers * batch
    out[name] = {"matmul_weights": n, "dense": passes * 6 * n * batch * length,
                 "attention": passes * attn}
  out["total"] = sum(v["dense"] + v["attention"] for v in out.values())
  return out


def xla_flops(stage) -> float | None:
  """flops from the cost_analysis of a jax Lowered or Compiled stage (None if absent)."""
  ca = stage.cost_analysis()
  if isinstance(ca, (list, tuple)):  # older jax: one dict per executable
    ca = ca[0] if ca else None
  return None if not ca or "flops" not in ca else float(ca["flops"])


def _lower(cfg, batch, length):
  _, _, init, step = build(cfg)
  b, r = synthetic(cfg, batch, length)
  abstract = jax.eval_shape(init, jax.random.key(0))
  return jax.jit(step, donate_argnums=0).lower(abstract, b, r), init, (b, r)


def _compile(cfg, batch, length):
  t0 = time.perf_counter()
  lowered, init, args = _lower(cfg, batch, length)
  return lowered.compile(), init, args, time.perf_counter() - t0


def flops_check(cfg, batch, length) -> dict:
  """Our formula against XLA's cost_analysis. XLA counts a scanned layer's body once, so the
  step is lowered with 1 and 2 unrolled layers of the same shapes (lowered HLO, before XLA's
  optimisations: no compile needed where the backend analyses lowered HLO; jax 0.11's CUDA
  backend does not (None, seen on an H200), and then the copies are compiled); the
  difference is one layer, the rest the embedding, head and losses, extrapolated to
  cfg.n_layers."""
  t0 = time.perf_counter()
  xla = {}
  for n in (1, 2):
    lowered = _lower(cfg.replace(n_layers=n, scan_layers=False), batch, length)[0]
    xla[n] = xla_flops(lowered)
    if xla[n] is None:
      xla[n] = xla_flops(lowered.compile())
  if not xla[1] or not xla[2]:
    return {"xla_1_layer": xla[1], "xla_2_layers": xla[2], "lower_s": time.perf_counter() - t0}
  full = xla[1] + (cfg.n_layers - 1) * (xla[2] - xla[1])
  ours = model_flops(cfg, batch, length)["total"]
  return {"xla_1_layer": xla[1], "xla_2_layers": xla[2], "xla_extrapolated": full,
          "formula": ours, "xla_over_formula": full / ours, "lower_s": time.perf_counter() - t0}


def run_case(lobe: str, remat: str, sizes: shapes.Sizes, dtype: str, check: bool = True) -> dict:
  """One row: compile, time sizes.train_reps steps after a warm-up, peak memory, FLOPs."""
  cfg = shapes.lobe(lobe, dtype, "float32", remat)
  B, T = sizes.train_batch, sizes.train_len
  row = {"lobe": lobe, "remat": remat, "dtype": dtype, "param_dtype": "float32", "batch": B,
         "length": T, "tokens_per_pass": B * T, "kind": "lateralized"}
  compiled, init, args, row["compile_s"] = _compile(cfg, B, T)
  row["memory_analysis"] = _memory(compiled)
  row["xla_flops_scanned"] = xla_flops(compiled)
  fl = model_flops(cfg, B, T)
  row["flops"] = fl
  row["params"] = {n: lobes.param_count(p) for n, p in jax.eval_shape(
      lambda: sln.init(sln.build("lateralized", cfg), jax.random.key(0))).items()}
  state = jax.jit(init)(jax.random.key(0))
  args = jax.device_put(args)  # the same batch every step, on the device once
  state, m = compiled(state, *args)  # warm-up
  jax.block_until_ready(state)
  row["loss"] = float(m["loss"])
  times = []
  for _ in range(sizes.train_reps):
    t0 = time.perf_counter()
    state, m = compiled(state, *args)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  row.update(times_s=times, min_s=min(times), median_s=float(np.median(times)),
             peak_bytes=device.jax_peak_bytes())
  row["model_flops_per_s"] = fl["total"] / row["min_s"]
  if check:
    try:
      row["flops_check"] = flops_check(cfg, B, T)
    except Exception as e:  # pylint: disable=broad-except  (the timing row stands without it)
      row["flops_check"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    ratio = row["flops_check"].get("xla_over_formula")
    if ratio:  # hardware FLOPs (recomputation included) over model FLOPs
      row["hardware_flops_per_s"] = row["model_flops_per_s"] * ratio
  return row


def _memory(compiled) -> dict:
  ma = compiled.memory_analysis()
  if ma is None:
    return {}
  return {k: int(getattr(ma, f"{k}_size_in_bytes", 0))
          for k in ("argument", "output", "alias", "temp", "generated_code")}
