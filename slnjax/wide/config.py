"""Configuration of a wide SLN (ablation rows E and G).

The LM that is lobotomised is a ``LobeConfig`` (``lm``); ``WideConfig`` says how many of its
blocks encode (``k_in``) and decode (``k_out``), how the inner loop runs, and the shape of the
two expert lobes. ``route`` is how the main gate's categorical choice (left / right / output)
is passed on, with the names of ``slnjax.soft_tokens``:

  soft              weights softmax(logits / tau); choice = argmax (PonderNet-style expected loss)
  gumbel            weights softmax((logits + g) / tau); choice = argmax(logits + g)
  straight_through  one-hot of the sampled choice forward, softmax(logits / tau) gradient
  gumbel_st         one-hot of argmax(logits + g) forward, Gumbel-softmax gradient
  hard              sampled choice, no pathwise gradient (REINFORCE / PPO on its log-prob)
  greedy            argmax, no gradient (evaluation)

In ``soft`` and ``gumbel`` every example runs all ``max_iters`` iterations (the halting weights
only weight the per-iteration answer losses); in the other modes an example halts (is frozen)
at the first iteration whose choice is "output", as in the ``lax.while_loop`` driver.

``min_iters`` m: the gate cannot choose OUTPUT at its calls t < m (its OUTPUT logit is masked
there, in every route and in both drivers), so every example makes at least m lobe calls and
the gate chooses among the lobes only. Without it a gate trained from scratch can halt at
its first call before the decoder ever learned to read lobe slots, and then nothing
teaches it otherwise (docs/results.md, rows E and G). The loss's ``halt_warmup`` raises m to
``max_iters`` for the first training steps (slnjax/wide/loss.py).
"""
from __future__ import annotations

import dataclasses

ROUTES = ("soft", "gumbel", "straight_through", "gumbel_st", "hard", "greedy")
RELAXED = ("soft", "gumbel")  # the forward pass is a mixture: no per-example halting
HARD_OF = {"soft": "greedy", "gumbel": "hard", "straight_through": "hard", "gumbel_st": "hard",
           "hard": "hard", "greedy": "greedy"}  # the choices the while_loop driver makes


@dataclasses.dataclass(frozen=True)
class WideConfig:
  k_in: int = 1  # encoder: the LM's first k_in blocks
  k_out: int = 1  # decoder: the LM's last k_out blocks (then final norm + LM head)
  max_iters: int = 4  # N: lobe invocations at most; the gate's (N+1)-th call is "output"
  min_iters: int = 0  # m: lobe invocations at least (OUTPUT masked at gate calls t < m)
  write_len: int = 1  # W: context slots a lobe call appends
  n_experts: int = 4
  top_k: int = 1  # experts per slot (Switch: 1)
  d_expert: int | None = None  # expert MLP width; None: the LM's d_ff
  gate_hidden: int | None = None  # main gate MLP width; None: the LM's d_model
  # The main gate's inputs and readout (gate.MainGate): gate_step_input=False drops the
  # embedding of the call index (halting a function of the context alone, as PonderNet's);
  # gate_linear=True drops the GELU (a linear readout; docs/results.md, parity).
  gate_step_input: bool = True
  gate_linear: bool = False
  route: str = "gumbel_st"  # see the module docstring
  temperature: float = 1.0  # sampling temperature of the gate's choices
  lateralized: bool = False  # G: the right lobe only scores; the gate reads the score
  bptt_depth: int | None = None  # None: full; k: the last k iterations before halting
  answer_len: int = 8  # tokens the output lobe decodes in `rollout`

  def __post_init__(self):
    if self.route not in ROUTES:
      raise ValueError(f"WideConfig.route={self.route!r}; expected one of {ROUTES}.")
    for name in ("k_in", "k_out", "max_iters", "write_len", "n_experts", "top_k", "answer_len"):
      if getattr(self, name) < 1:
        raise ValueError(f"WideConfig.{name}={getattr(self, name)} must be >= 1.")
    if (isinstance(self.min_iters, bool) or not isinstance(self.min_iters, int)
        or not 0 <= self.min_iters <= self.max_iters):
      raise ValueError(f"WideConfig.min_iters={self.min_iters!r} must be an int in [0, "
                       f"max_iters={self.max_iters}] (0: the gate may output at once).")
    if self.top_k > self.n_experts:
      raise ValueError(f"WideConfig.top_k={self.top_k} exceeds n_experts={self.n_experts}.")
    if self.bptt_depth is not None and self.bptt_depth < 1:
      raise ValueError(f"WideConfig.bptt_depth={self.bptt_depth}: use None (full) or k >= 1.")

  @property
  def relaxed(self) -> bool:
    return self.route in RELAXED

  def replace(self, **kw) -> "WideConfig":
    return dataclasses.replace(self, **kw)

  @classmethod
  def from_dict(cls, d) -> "WideConfig":
    d = dict(d)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"Unknown wide config keys {unknown}; valid keys: {sorted(names)}.")
    return cls(**d)
