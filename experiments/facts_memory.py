r"""python experiments/facts_memory.py --mode=MODE [--steps=500] [--set KEY=VALUE] [--out=/tmp/facts_memory]

Memory selection on the `facts` task (closed book: the prompt is the question only). Each
example's memory bank holds its fact strings (the relevant ones and 8 distractors, shuffled);
a selector (hashed n-gram encoder + multi-head attention scores) picks k = 2 of them and
their token embeddings are prepended to the question; a small lobe answers. Everything is
trained from scratch, jointly, on the answer's cross-entropy. Modes:

  none        no memory (the closed-book baseline)
  oracle      the relevant facts are prepended (upper bound of the reader)
  soft        soft attention read-out (relaxed top-k), gradient through the read-out
  gumbel_st   Gumbel top-k, straight-through gradient
  reinforce   sampled top-k; the selector learns by REINFORCE (reward: -CE of the answer)
  ppo         the same reward with PPO-clip, `ppo_epochs` updates per batch
  pretrained  supervised selector pre-training (relevance labels) then REINFORCE with a
              distillation regulariser to the pre-trained selector (the recency term of
              memory.recency_targets is off, alpha = 0: a bank's order is a shuffle here)

Reports test accuracy (greedy answer = target), token accuracy (target tokens, eos included,
right under teacher forcing), by difficulty (1 or 2 lookups), and the selector's top-1
precision and recall@k of the relevant facts, as JSON in <out>/<mode>.json; the training log
adds `sel_grad` (the selector's gradient norm), `p_max` (the largest selection probability)
and, for the RL modes, `reward_std`. `get_config(":smoke")` is a seconds-long version.

Settings (and why): 1250 people, so that the 6000 training questions the config asks for
exist (the pool is people x 3 attributes x 2 hop counts, 80 % train; 300 people gave only
1440). Items are right-aligned in their prefix slots (`prefix_align`): every fact ends at its
slot's last place, so a year or a height sits at a fixed offset from the answer (the question
is left-padded for the same reason). Oracle reader, measured: 300 people, left-aligned, 400
steps 0.03; 1250 people, left-aligned, 800 steps 0.28; 1250 people, right-aligned, 500 steps
0.67 (the row below). The layout is the same for every mode; the selection problem is
unchanged. Chosen on the oracle reader's training curve, not on the test split.

Result: (500 steps, batch 16, lr 3e-3, seed 0, 600 test questions; a shared 2-core CPU, walls
are upper bounds): none 0.028 (74 s), oracle 0.670 (d1 0.75 / d2 0.59; 287 s); soft 0.037,
gumbel_st 0.005, reinforce 0.005 (350 / 332 / 318 s) with selectors near chance (top-1
precision 0.18 / 0.14 / 0.20, chance 0.15); pretrained 0.028 with a selector well above
chance (precision 0.48, recall@2 0.63, d1 0.84) that the reader has not learned to read yet
(372 s); at 1000 steps pretrained 0.030, precision 0.50, recall@2 0.63 (524 s); ppo 0.027,
precision 0.19 (its selection turns deterministic by step ~300 on near-chance picks; 889 s
sharing the cores with a test run).
docs/results.md has the table and what the training logs say about why.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict

from slnjax import data, lobes, memory
from slnjax.data.tasks import base as task_base

MODES = ("none", "oracle", "soft", "gumbel_st", "reinforce", "ppo", "pretrained")


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.seed = 0
  c.mode = "gumbel_st"
  c.task = config_dict.ConfigDict(dict(
      name="facts", data_dir="/tmp/slnjax_data",
      overrides=dict(base="closed_book", name="closed_book_mem1250", num_people=1250,
                     num_train=6000, num_test=600, num_distractors=8)))
  c.item_len = 58  # bytes per memory item (the longest fact has 57)
  c.prefix_align = "right"  # an item in its prefix slot: "right" (padding before) | "left"
  c.question_len = 68
  c.target_len = 9
  c.batch_size = 16
  c.steps = 500
  c.lr = 3e-3
  c.selector_lr = 3e-3
  c.tau = 0.5  # relaxation temperature (soft, gumbel_st)
  c.ppo_epochs = 2
  c.clip_eps = 0.2
  c.pretrain_steps = 300
  c.distill = 0.1
  c.lobe = config_dict.ConfigDict(dict(d_model=48, n_layers=2, n_heads=4, n_kv_heads=2,
                                       d_ff=192, vocab_size=260))
  c.memory = config_dict.ConfigDict(dict(selector="mha", residual=True, k=2, key_dim=64,
                                         buckets=4096, heads=4, hidden=64))
  c.eval_batches = 0  # 0: the whole test split
  if arg and arg.strip(":") == "smoke":
    c.task.overrides.update(name="closed_book_mem_smoke", num_people=30, num_train=64,
                            num_test=32)
    c.steps, c.batch_size, c.pretrain_steps = 3, 8, 2
    c.lobe.update(d_model=16, n_layers=1, d_ff=32)
  return c


def _encode(tok, text: str, n: int) -> tuple[np.ndarray, int]:
  ids = tok.encode(text)[:n]
  out = np.zeros(n, np.int32)
  out[:len(ids)] = ids
  return out, len(ids)


def load_split(c, split: str) -> dict:
  """Arrays of a split: question (left-padded), target, bank items, relevance labels."""
  tcfg = dict(c.task.overrides)
  data.ensure_built(c.task.name, c.task.data_dir, tcfg)
  source = data.load_source(c.task.name, split, c.task.data_dir, tcfg)
  tok = data.ByteTokenizer()
  n = len(source)
  C = 2 + c.task.overrides["num_distractors"]
  out = {"q": np.zeros((n, c.question_len), np.int32), "q_len": np.zeros(n, np.int32),
         "t": np.zeros((n, c.target_len), np.int32), "t_len": np.zeros(n, np.int32),
         "ids": np.zeros((n, C, c.item_len), np.int32), "len": np.zeros((n, C), np.int32),
         "mask": np.zeros((n, C), bool), "rel": np.zeros((n, C), bool),
         "difficulty": np.zeros(n, np.int32)}
  rng = np.random.default_rng(c.seed + (split == "test"))
  for i in range(n):
    r = source[i]
    q = [tok.bos_id] + tok.encode("Q: " + task_base.as_text(r["question"]) + "\n")
    q = q[-c.question_len:]
    out["q"][i, c.question_len - len(q):] = q  # left-padded: the answer starts at a fixed place
    out["q_len"][i] = len(q)
    t = tok.encode(task_base.as_text(r["target"]))[:c.target_len - 1] + [tok.eos_id]
    out["t"][i, :len(t)], out["t_len"][i] = t, len(t)
    facts = [(f, True) for f in task_base.as_text_list(r["relevant_facts"])]
    facts += [(f, False) for f in task_base.as_text_list(r["distractor_facts"])]
    for j, p in enumerate(rng.permutation(len(facts))[:C]):
      f, rel = facts[p]
      out["ids"][i, j], out["len"][i, j] = _encode(tok, f, c.item_len)
      out["mask"][i, j], out["rel"][i, j] = True, rel
    out["difficulty"][i] = int(r["difficulty"])
  return out


def lobe_cfg(c) -> lobes.LobeConfig:
  return lobes.LobeConfig(**c.lobe.to_dict())


def mem_cfg(c, mode: str) -> memory.MemoryConfig:
  sel_mode = {"soft": "soft", "gumbel_st": "gumbel_st"}.get(mode, "sample")
  return memory.MemoryConfig(mode=sel_mode, **c.memory.to_dict())


def oracle_selection(rel_BC, k: int) -> memory.Selection:
  """The relevant items, in slot order (the k slots filled first with relevant facts)."""
  order = jnp.argsort(~rel_BC, axis=1, stable=True)[:, :k]
  valid = jnp.take_along_axis(rel_BC, order, axis=1)
  w = jax.nn.one_hot(order, rel_BC.shape[1]) * valid[..., None]
  return memory.Selection(w, order.astype(jnp.int32), valid, jnp.zeros(rel_BC.shape[:1]))


def answer_nll(c, lcfg, lp, prefix_BTD, q_BQ, t_BT, tlen_B):
  """Per-example summed NLL of the target, exact match of the teacher-forced argmax (= the
  greedy answer is the target) and the share of target tokens (eos included) it gets right."""
  e_q = lobes.embed_ids(lcfg, lp, q_BQ)
  e_t = lobes.embed_ids(lcfg, lp, t_BT[:, :-1])
  x = jnp.concatenate([prefix_BTD, e_q, e_t], axis=1) if prefix_BTD is not None else \
      jnp.concatenate([e_q, e_t], axis=1)
  logits = lobes.apply(lcfg, lp, embeds=x)["logits_BTV"]
  T = t_BT.shape[1]
  logits = logits[:, -T:]  # position of the last question token predicts target token 0
  lp_BTV = jax.nn.log_softmax(logits, -1)
  m = jnp.arange(T)[None] < tlen_B[:, None]
  tok_lp = jnp.take_along_axis(lp_BTV, t_BT[..., None], -1)[..., 0]
  nll_B = -jnp.sum(jnp.where(m, tok_lp, 0.0), 1)
  hit_BT = (jnp.argmax(logits, -1) == t_BT) & m
  em_B = jnp.all(hit_BT | ~m, axis=1)
  tok_B = jnp.sum(hit_BT, 1) / jnp.maximum(jnp.sum(m, 1), 1)
  return nll_B, em_B, tok_B


def make_fns(c, mode: str):
  lcfg, mcfg = lobe_cfg(c), mem_cfg(c, mode)
  k = mcfg.k

  def read(mp, b, key, train: bool, forced=None):
    bank = memory.from_arrays(jnp.zeros(b["ids"].shape[:2] + (1,)), b["ids"], b["len"],
                              b["mask"])
    if mode == "oracle":
      return oracle_selection(b["rel"], k), bank, None
    if forced is not None:  # PPO: the behaviour policy's choice, re-scored
      scores = memory.scores(mcfg, mp, bank, b["q"], b["q_len"])
      return memory.replay(scores, b["mask"], *forced, mcfg.temperature), bank, scores
    sel_mode = mcfg.mode if train else ("soft" if mcfg.mode == "soft" else "greedy")
    sel, scores = memory.read(mcfg, mp, bank, b["q"], b["q_len"], key, tau=c.tau,
                              mode=sel_mode)
    return sel, bank, scores

  def forward(params, b, key, train: bool, forced=None):
    lp, mp = params["lobe"], params["memory"]
    if mode == "none":
      nll, em, tok = answer_nll(c, lcfg, lp, None, b["q"], b["t"], b["t_len"])
      return nll, (em, tok), None, None
    sel, bank, scores = read(mp, b, key, train, forced)
    prefix = memory.prefix_embeds(sel, bank, lobes.embedding_matrix(lcfg, lp),
                                  align=c.prefix_align)
    nll, em, tok = answer_nll(c, lcfg, lp, prefix, b["q"], b["t"], b["t_len"])
    return nll, (em, tok), sel, scores

  def loss(params, b, key, ref_mp=None, behaviour=None):
    forced = None if behaviour is None else behaviour[:2]
    nll, em, sel, scores = forward(params, b, key, True, forced)
    ntok = jnp.maximum(b["t_len"].astype(jnp.float32), 1.0)
    lm = jnp.mean(nll / ntok)
    total, m = lm, {"nll": lm, "train_acc": jnp.mean(em[0]), "train_tok": jnp.mean(em[1])}
    if mode in ("reinforce", "ppo", "pretrained"):
      reward = jax.lax.stop_gradient(-nll / ntok)
      m["reward_std"] = jnp.std(reward)
      if mode == "ppo":
        adv = reward - jnp.mean(reward)
        total = total + memory.ppo_loss(sel.logp_B, behaviour[2], adv, c.clip_eps)
      else:
        total = total + memory.reinforce_loss(sel.logp_B, reward)
      if mode == "pretrained":
        bank = memory.from_arrays(jnp.zeros(b["ids"].shape[:2] + (1,)), b["ids"], b["len"],
                                  b["mask"])
        ref = memory.scores(mcfg, ref_mp, bank, b["q"], b["q_len"])
        d = memory.distill_loss(scores, ref, b["mask"])
        total, m["distill"] = total + c.distill * d, d
    if sel is not None:
      m["precision1"] = jnp.mean(jnp.take_along_axis(b["rel"], sel.index_BJ[:, :1], 1))
    if scores is not None:  # how peaked the selector is (1: one item takes all the mass)
      z = jnp.where(b["mask"], scores / mcfg.temperature, -1e30)
      m["p_max"] = jnp.mean(jnp.max(jax.nn.softmax(z, -1), -1))
    return total, m

  def pretrain_loss(mp, b):
    bank = memory.from_arrays(jnp.zeros(b["ids"].shape[:2] + (1,)), b["ids"], b["len"],
                              b["mask"])
    s = memory.scores(mcfg, mp, bank, b["q"], b["q_len"])
    target = memory.recency_targets(bank, lam=0.0, relevant_BC=b["rel"], alpha=0.0)
    return memory.pretrain_loss(s, b["mask"], target)

  return lcfg, mcfg, forward, loss, pretrain_loss


def _batch(arrs, idx):
  return {k: jnp.asarray(v[idx]) for k, v in arrs.items()}


def run(c, mode: str, out_dir: str | None = None, log=print) -> dict:
  if mode not in MODES:
    raise ValueError(f"mode={mode!r}; expected one of {MODES}.")
  t0 = time.time()
  train, test = load_split(c, "train"), load_split(c, "test")
  lcfg, mcfg, forward, loss, pretrain_loss = make_fns(c, mode)
  key = jax.random.key(c.seed)
  k_l, k_m, key = jax.random.split(key, 3)
  params = {"lobe": lobes.init(lcfg, k_l), "memory": memory.init(mcfg, k_m)}
  sched = lambda lr: optax.warmup_cosine_decay_schedule(0.0, lr, 50, max(c.steps, 51), lr * 0.1)
  opt = optax.multi_transform(
      {"lobe": optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched(c.lr))),
       "memory": optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched(c.selector_lr)))},
      {"lobe": "lobe", "memory": "memory"})
  opt_state = opt.init(params)
  rng = np.random.default_rng(c.seed)
  n_train = len(train["q"])
  ref_mp = None
  if mode == "pretrained":  # supervised selector pre-training on relevance labels
    popt = optax.adam(c.selector_lr)
    ps = popt.init(params["memory"])

    @jax.jit
    def pstep(mp, ps, b):
      l, g = jax.value_and_grad(pretrain_loss)(mp, b)
      u, ps = popt.update(g, ps, mp)
      return optax.apply_updates(mp, u), ps, l

    for i in range(c.pretrain_steps):
      mp, ps, l = pstep(params["memory"], ps, _batch(train, rng.integers(0, n_train,
                                                                         c.batch_size)))
      params = {**params, "memory": mp}
    log(f"[{mode}] pre-trained the selector {c.pretrain_steps} steps, loss {float(l):.3f}")
    ref_mp = jax.tree.map(jnp.copy, params["memory"])

  @jax.jit
  def step(params, opt_state, b, key, behaviour):
    (l, m), g = jax.value_and_grad(loss, has_aux=True)(params, b, key, ref_mp, behaviour)
    if mode not in ("none", "oracle"):  # does a learning signal reach the selector?
      m = {**m, "sel_grad": optax.global_norm(g["memory"])}
    u, opt_state = opt.update(g, opt_state, params)
    return optax.apply_updates(params, u), opt_state, m

  @jax.jit
  def behaviour(params, b, key):
    sel = forward(params, b, key, True)[2]
    return sel.index_BJ, sel.valid_BJ, sel.logp_B

  for i in range(c.steps):
    b = _batch(train, rng.integers(0, n_train, c.batch_size))
    kk = jax.random.fold_in(key, i)
    if mode == "ppo":
      old = behaviour(params, b, kk)
      for _ in range(c.ppo_epochs):
        params, opt_state, m = step(params, opt_state, b, kk, old)
    else:
      params, opt_state, m = step(params, opt_state, b, kk, None)
    if (i + 1) % max(c.steps // 12, 1) == 0 or i == 0:
      log(f"[{mode}] step {i + 1}: " + " ".join(f"{k}={float(v):.3f}" for k, v in m.items())
          + f" ({time.time() - t0:.0f}s)")
  res = evaluate(c, mode, forward, params, test, mcfg.k)
  res.update(mode=mode, steps=c.steps, seconds=round(time.time() - t0, 1),
             train_examples=n_train)
  log(f"[{mode}] " + json.dumps(res))
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{mode}.json"), "w") as f:
      json.dump(res, f, indent=1)
  return res


def evaluate(c, mode, forward, params, test, k) -> dict:
  fwd = jax.jit(lambda p, b, key: forward(p, b, key, False))
  n = len(test["q"])
  bs = c.batch_size
  nb = (n + bs - 1) // bs if not c.eval_batches else min(c.eval_batches, (n + bs - 1) // bs)
  em, tok, p1, rec, dif = [], [], [], [], []
  for i in range(nb):
    idx = np.arange(i * bs, min((i + 1) * bs, n))
    idx = np.concatenate([idx, np.zeros(bs - len(idx), int)])  # pad (dropped below)
    real = min(bs, n - i * bs)
    b = _batch(test, idx)
    _, (e, t), sel, _ = fwd(params, b, jax.random.key(0))
    em.append(np.asarray(e)[:real])
    tok.append(np.asarray(t)[:real])
    dif.append(test["difficulty"][idx][:real])
    if sel is not None:
      p1.append(np.asarray(jnp.take_along_axis(b["rel"], sel.index_BJ[:, :1], 1))[:real, 0])
      rec.append(np.asarray(memory.recall_at_k(sel, b["rel"]))[:real])
  em, tok, dif = np.concatenate(em), np.concatenate(tok), np.concatenate(dif)
  out = {"test_examples": int(len(em)), "accuracy": float(em.mean()),
         "token_accuracy": float(tok.mean())}
  for d in sorted(set(dif.tolist())):
    out[f"accuracy_d{d}"] = float(em[dif == d].mean())
  if p1:
    p1, rec = np.concatenate(p1), np.concatenate(rec)
    out["precision_top1"] = float(p1.mean())
    out[f"recall_at_{k}"] = float(rec.mean())
    for d in sorted(set(dif.tolist())):
      out[f"precision_top1_d{d}"] = float(p1[dif == d].mean())
      out[f"recall_at_{k}_d{d}"] = float(rec[dif == d].mean())
  return out


def _field(c, dotted: str):
  for part in dotted.split("."):
    c = c[part]  # a KeyError names an unknown field
  return c


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--mode", default="gumbel_st", choices=MODES + ("all",))
  ap.add_argument("--steps", type=int, default=None)
  ap.add_argument("--seed", type=int, default=None)
  ap.add_argument("--config_arg", default=None, help="e.g. :smoke")
  ap.add_argument("--out", default="/tmp/facts_memory")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="override a config field, e.g. --set lr=1e-2 --set lobe.d_model=64")
  a = ap.parse_args(argv)
  c = get_config(a.config_arg)
  for kv in a.set:
    key, _, value = kv.partition("=")
    old = _field(c, key)
    c.update_from_flattened_dict({key: value.lower() in ("1", "true") if isinstance(old, bool)
                                  else type(old)(value)})
  if a.steps is not None:
    c.steps = a.steps
  if a.seed is not None:
    c.seed = a.seed
  for mode in (MODES if a.mode == "all" else (a.mode,)):
    run(c, mode, a.out)


if __name__ == "__main__":
  sys.exit(main())
