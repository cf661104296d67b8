"""Losses of a wide SLN, from an ``unroll`` (a pure function; the objective wraps it).

Halting distribution (PonderNet): with halting weight h_t at gate call t (t < N) and
h_N = 1 (the last call outputs by force),

    q_n = h_n * prod_{j<n} (1 - h_j),   n = 0..N,   sum_n q_n = 1.

In the soft / Gumbel routes q is a distribution and the answer loss is its expectation
sum_n q_n CE_n (differentiable in the gate); in the straight-through routes q is one-hot
forward (the halting step) with the relaxed gradient; in the ``hard`` route (policy gradient)
q is the one-hot of the sampled halting step and carries no gradient: the gate learns from
REINFORCE or PPO on the log-probs of its choices with the task reward instead.

Options: ``ponder_kl`` beta * KL(q || truncated Geometric(lambda_p)) (PonderNet's prior on the
number of iterations); ``compute_cost`` c * E_q[n] (pathwise) or - c * n in the reward;
``balance`` coefficient of the Switch load-balancing loss of each lobe's router; ``critic``
BCE of a lateralized right lobe's score against whether the answer decoded from the
context it judged is right.

Minimum calls m (``WideConfig.min_iters``, raised to N by ``halt_warmup``): the gate cannot
output before call m, so h_t = 0 and q_t = 0 for t < m; the prior is the geometric one over
the optional calls, p_n = lambda (1 - lambda)^(n - m) for m <= n < N (tail at N), 0 below m.
``halt_warmup`` W: for training steps < W, m = N: every lobe call is made and q is one-hot
at N in every route, so the decoder learns to read lobe slots before the gate may halt
early (the gate still learns which lobe to call: in the hard route REINFORCE on its masked
left / right policy). From step W on, m = min_iters. The step is traced (one compilation).

``prior_floor`` eps: the answer loss weights halting step n by (1 - eps) q_n + eps p_n (p the
prior), so the decoder keeps learning to answer after every number of calls, not only after
the one the gate currently prefers (in the PonderNet loss a step with q_n ~ 0 gets no
training, so its CE_n stays high and the gate never moves there: a rich-get-richer
collapse onto one n). The gate's gradient is that of (1 - eps) E_q[CE]; ``answer_ce``,
``accuracy`` and the hard route's reward stay those of q.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from slnjax.wide.gate import LEFT, RIGHT
from slnjax.wide.loop import WideOut
from slnjax.wide.moe import load_balance_loss


@dataclasses.dataclass(frozen=True)
class WideLossConfig:
  ponder_kl: float = 0.0  # beta: weight of KL(q || geometric prior)
  prior_lambda: float = 0.3  # lambda_p: the prior's halting probability per call
  compute_cost: float = 0.0  # cost per lobe call
  balance: float = 0.01  # load-balancing coefficient
  critic: float = 1.0  # lateralized: weight of the right lobe's BCE
  pg: str = "reinforce"  # hard route: "reinforce" | "ppo"
  reward: str = "correct"  # hard route: "correct" (1/0, teacher-forced argmax) | "neg_ce"
  clip_eps: float = 0.2  # PPO
  entropy: float = 0.0  # bonus on the gate's choice entropy (hard route)
  halt_warmup: int = 0  # W: training steps < W make all max_iters lobe calls (0: off)
  prior_floor: float = 0.0  # eps: weight of the prior in the answer loss's halting weights

  def __post_init__(self):
    if self.pg not in ("reinforce", "ppo"):
      raise ValueError(f"pg={self.pg!r}; expected 'reinforce' or 'ppo'.")
    if self.reward not in ("correct", "neg_ce"):
      raise ValueError(f"reward={self.reward!r}; expected 'correct' or 'neg_ce'.")
    if not 0 < self.prior_lambda < 1:
      raise ValueError(f"prior_lambda={self.prior_lambda} must lie in (0, 1).")
    w = self.halt_warmup
    if isinstance(w, bool) or not isinstance(w, int) or w < 0:
      raise ValueError(f"halt_warmup={w!r} must be an int >= 0: the number of training steps "
                       "that make every lobe call (0 turns the warm-up off).")
    if not 0 <= self.prior_floor < 1:
      raise ValueError(f"prior_floor={self.prior_floor} must lie in [0, 1) (0: the answer loss "
                       "is PonderNet's E_q[CE]).")


def min_calls_at(cfg: WideLossConfig, min_iters: int, max_iters: int, step):
  """The minimum number of lobe calls at training step `step` (traced int32 scalar)."""
  if not cfg.halt_warmup:
    return jnp.int32(min_iters)
  return jnp.where(jnp.asarray(step) < cfg.halt_warmup, max_iters, min_iters).astype(jnp.int32)


def halting_distribution(halt_w_NB):
  """q [N+1, B] from halting weights [N, B] (the last call halts by force)."""
  h_nB = jnp.concatenate([halt_w_NB, jnp.ones_like(halt_w_NB[:1])], axis=0)
  surv_nB = jnp.cumprod(jnp.concatenate([jnp.ones_like(h_nB[:1]), 1 - h_nB[:-1]], 0), axis=0)
  return h_nB * surv_nB


def geometric_prior(n_iters: int, lam: float, min_calls=0):
  """Truncated geometric over n = 0..N, shifted to start at `min_calls` m (may be traced):
  lam (1-lam)^(n-m) for m <= n < N, the tail mass (1-lam)^(N-m) at N, 0 below m [N+1]."""
  n = jnp.arange(n_iters + 1)
  k = (n - min_calls).astype(jnp.float32)
  p = jnp.where(k < 0, 0.0, lam * (1 - lam) ** jnp.maximum(k, 0.0))
  return jnp.where(n == n_iters, (1 - lam) ** (n_iters - jnp.asarray(min_calls, jnp.float32)), p)


def ponder_kl(q_nB, prior_n):
  q = jnp.clip(q_nB, 1e-12, 1.0)
  logp = jnp.log(jnp.clip(prior_n, 1e-30, 1.0))[:, None]  # 0 below m, where q is 0 too
  return jnp.sum(jnp.where(q_nB > 0, q * (jnp.log(q) - logp), 0.0), 0)


def balance_losses(out: WideOut, q_nB):
  """Load-balancing loss of each lobe, over the lobe calls that were (or would be) made."""
  N, B = out.halt_w_NB.shape
  surv_NB = jax.lax.stop_gradient(1.0 - jnp.cumsum(q_nB, axis=0)[:N] + q_nB[:N])
  res = {}
  for name, i, probs, idx in (("left", LEFT, out.probs_left_NBWX, out.index_left_NBWk),
                              ("right", RIGHT, out.probs_right_NBWX, out.index_right_NBWk)):
    w_NB = surv_NB * (1.0 - jax.lax.stop_gradient(out.halt_w_NB)) * out.lobe_w_NB2[..., i]
    W = probs.shape[2]
    w_T = jnp.repeat(w_NB.reshape(-1), W)
    res[name] = load_balance_loss(probs.reshape(N * B * W, -1),
                                  idx.reshape(N * B * W, idx.shape[-1]), w_T)
  return res


def wide_loss(out: WideOut, cfg: WideLossConfig, route: str, lateralized: bool = False,
              old_logp_NB=None, valid_B=None, min_calls=0):
  """Scalar loss and metrics. `old_logp_NB`: behaviour log-probs (PPO, hard route);
  `min_calls`: the m the unroll ran with (it shifts the geometric prior)."""
  N, B = out.halt_w_NB.shape
  valid_B = jnp.ones((B,), jnp.float32) if valid_B is None else valid_B.astype(jnp.float32)
  nval = jnp.maximum(valid_B.sum(), 1.0)
  mean = lambda x_B: jnp.sum(x_B * valid_B) / nval
  ntok_B = jnp.maximum(out.ntok_B, 1).astype(jnp.float32)
  n_idx = jnp.arange(N + 1, dtype=jnp.float32)[:, None]
  t_star = out.iters_B
  hard_q_nB = jax.nn.one_hot(t_star, N + 1, axis=0, dtype=out.ce_nB.dtype)
  metrics = {}
  prior_n = geometric_prior(N, cfg.prior_lambda, min_calls)

  def floored(task_B):  # the answer loss the model trains on (see prior_floor)
    if not cfg.prior_floor:
      return task_B
    all_B = jnp.sum(prior_n[:, None] * out.ce_nB, 0) / ntok_B
    return (1 - cfg.prior_floor) * task_B + cfg.prior_floor * all_B

  if route == "hard":
    q_nB = hard_q_nB
    task_B = jnp.sum(q_nB * out.ce_nB, 0) / ntok_B
    correct_B = jnp.sum(q_nB * out.correct_nB, 0)
    r_B = correct_B if cfg.reward == "correct" else -task_B
    r_B = jax.lax.stop_gradient(r_B - cfg.compute_cost * t_star)
    adv_B = r_B - mean(r_B)
    run_NB = out.running_NB.astype(jnp.float32)
    if cfg.pg == "reinforce":
      pg_B = -adv_B * jnp.sum(run_NB * out.logp_NB, 0)
    else:
      if old_logp_NB is None:
        raise ValueError("pg='ppo' needs the behaviour log-probs (old_logp_NB) of a rollout.")
      ratio_NB = jnp.exp(out.logp_NB - old_logp_NB)
      clipped = jnp.clip(ratio_NB, 1 - cfg.clip_eps, 1 + cfg.clip_eps)
      pg_B = -jnp.sum(run_NB * jnp.minimum(ratio_NB * adv_B, clipped * adv_B), 0)
      metrics["ppo_clip_frac"] = mean(jnp.sum(run_NB * (jnp.abs(ratio_NB - 1) > cfg.clip_eps), 0)
                                      / jnp.maximum(run_NB.sum(0), 1))
    ent_NB = -jnp.sum(out.probs_NB3 * jnp.log(jnp.clip(out.probs_NB3, 1e-12)), -1)
    loss_B = floored(task_B) + pg_B - cfg.entropy * jnp.sum(run_NB * ent_NB, 0)
    metrics["reward"] = mean(r_B)
    compute_B = t_star.astype(jnp.float32)
  else:
    q_nB = halting_distribution(out.halt_w_NB)
    task_B = jnp.sum(q_nB * out.ce_nB, 0) / ntok_B
    correct_B = jnp.sum(jax.lax.stop_gradient(q_nB) * out.correct_nB, 0)
    compute_B = jnp.sum(q_nB * n_idx, 0)
    loss_B = floored(task_B) + cfg.compute_cost * compute_B
    if cfg.ponder_kl:
      kl_B = ponder_kl(q_nB, prior_n)
      loss_B = loss_B + cfg.ponder_kl * kl_B
      metrics["ponder_kl"] = mean(kl_B)
  loss = mean(loss_B)
  bal = balance_losses(out, jax.lax.stop_gradient(q_nB))
  if cfg.balance:
    loss = loss + cfg.balance * (bal["left"] + (0.0 if lateralized else bal["right"]))
  if lateralized and cfg.critic:
    # The right lobe judged the context of call t; its target: that context's answer is right.
    y_NB = jax.lax.stop_gradient(out.correct_nB[:N].astype(out.score_logit_NB.dtype))
    bce_NB = (jnp.logaddexp(0.0, out.score_logit_NB) - y_NB * out.score_logit_NB)
    run_NB = out.running_NB.astype(bce_NB.dtype)
    bce_B = jnp.sum(run_NB * bce_NB, 0) / jnp.maximum(run_NB.sum(0), 1)
    loss = loss + cfg.critic * mean(bce_B)
    metrics["critic_bce"] = mean(bce_B)
  metrics.update({
      "loss": loss, "answer_ce": mean(task_B), "accuracy": mean(correct_B),
      "iters_hard": mean(t_star.astype(jnp.float32)), "iters_expected": mean(compute_B),
      "balance_left": bal["left"], "balance_right": bal["right"],
      "accuracy_if_max_iters": mean(out.correct_nB[-1].astype(jnp.float32)),
      "accuracy_if_no_calls": mean(out.correct_nB[0].astype(jnp.float32)),
      "min_calls": jnp.asarray(min_calls, jnp.float32),
  })
  return loss, metrics
