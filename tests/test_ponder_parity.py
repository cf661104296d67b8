"""PonderNet parity with the wide SLN's gate (experiments/ponder_parity.py): loss pieces
checked by hand on tiny numbers, sampled halting, the data, the gate's step input, and that a
few training steps reduce the loss."""
import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from slnjax.lobes.config import LobeConfig
from slnjax.wide.gate import OUTPUT, MainGate, halt_prob

_PATH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "ponder_parity.py"
_SPEC = importlib.util.spec_from_file_location("ponder_parity", _PATH)
pp = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pp)


def test_halting_distribution_loss_and_kl_by_hand():
  lam_NB = jnp.array([[0.5], [0.2], [0.7]])  # 3 steps; the last halts by force
  y_NB = jnp.array([[0.0], [2.0], [-1.0]])
  t_B = jnp.array([1.0])
  p = [0.5, 0.5 * 0.2, 0.5 * 0.8]
  bce = [math.log(2), math.log(1 + math.exp(-2)), math.log(1 + math.exp(1))]
  prior = [0.2, 0.2 * 0.8, 0.8 ** 2]  # truncated geometric, the tail mass at the last step
  kl = sum(a * math.log(a / b) for a, b in zip(p, prior))
  loss, aux = pp.ponder_loss(y_NB, lam_NB, t_B, lam_p=0.2, beta=0.01)
  np.testing.assert_allclose(aux["rec"], sum(a * b for a, b in zip(p, bce)), rtol=1e-6)
  np.testing.assert_allclose(aux["kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(loss, aux["rec"] + 0.01 * kl, rtol=1e-6)
  np.testing.assert_allclose(pp.entropy(jnp.array([[0.5], [0.1], [0.4]]))[0],
                             -sum(a * math.log(a) for a in p), rtol=1e-6)


def test_max_steps_where_the_prior_reaches_095():
  n = pp.prior_steps(0.2)
  assert n == 14 and 1 - 0.8 ** n >= 0.95 > 1 - 0.8 ** (n - 1)


def test_sampled_halting():
  y_NB = jnp.array([[-1.0, -1.0], [2.0, 3.0], [-3.0, -3.0]])
  lam_NB = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
  n_B, pred_B = pp.sampled_halting(jax.random.key(0), y_NB, lam_NB)
  assert n_B.tolist() == [2, 3] and pred_B.tolist() == [True, False]  # 2nd: forced at N
  lam = jnp.full((3, 20000), 0.5)
  n_B, _ = pp.sampled_halting(jax.random.key(1), jnp.zeros((3, 20000)), lam)
  np.testing.assert_allclose([np.mean(n_B == k) for k in (1, 2, 3)], [0.5, 0.25, 0.25],
                             atol=0.02)


def test_batch_has_k_nonzeros_and_parity_of_the_ones():
  x, y, k = pp.make_batch(jax.random.key(3), 64, 2, 5)
  x, y, k = map(np.asarray, (x, y, k))
  assert set(np.unique(x)) <= {-1.0, 0.0, 1.0} and (2 <= k).all() and (k <= 5).all()
  assert ((x != 0).sum(1) == k).all() and ((x > 0).sum(1) % 2 == y).all()


def test_gate_without_step_input_ignores_the_step():
  lm = LobeConfig(d_model=8, n_heads=1, n_layers=1, d_ff=8, vocab_size=8)
  ctx = jax.random.normal(jax.random.key(0), (2, 3, 8))
  lens = jnp.array([2, 3])
  for step_input in (True, False):
    gate = MainGate(lm, 4, 3, step_input=step_input)
    params = gate.init(jax.random.key(1), ctx, lens, 0)["params"]
    params = jax.tree.map(lambda a: a * 50.0, params)
    assert ("step_emb" in params) == step_input
    same = np.allclose(gate.apply({"params": params}, ctx, lens, 0),
                       gate.apply({"params": params}, ctx, lens, 2))
    assert same != step_input
  logits = jnp.array([[0.0, 1.0, 2.0]])
  np.testing.assert_allclose(halt_prob(logits), jax.nn.softmax(logits)[:, OUTPUT])


def test_a_few_training_steps_reduce_the_loss():
  # One non-zero element (parity = "is it +1"): learnable in a few steps.
  kw = dict(batch=64, lr=1e-2, hidden=16, gate_hidden=8, log=lambda m: None, k_range=(1, 1))
  model, p0, _ = pp.train(0, 0, **kw)
  _, p1, _ = pp.train(0, 40, **kw)
  x, t, _ = pp.make_batch(jax.random.key(7), 256, 1, 1)
  loss = lambda p: float(pp.ponder_loss(*model(p, x), t)[0])
  assert loss(p1) < loss(p0) - 0.01


def test_linear_gate_is_an_affine_readout_of_the_normed_state():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  lm = LobeConfig(d_model=8, n_heads=1, n_layers=1, d_ff=8, vocab_size=8)
  gate = MainGate(lm, 4, 3, step_input=False, linear=True)
  h = jax.random.normal(jax.random.key(0), (2, 1, 8))
  lens = jnp.ones((2,), jnp.int32)
  p = nn.meta.unbox(gate.init(jax.random.key(1), h, lens, 0)["params"])
  p = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape), p)
  n = h[:, 0] / jnp.sqrt(jnp.mean(h[:, 0] ** 2, -1, keepdims=True) + lm.norm_eps)
  n = n * p["norm"]["scale"]
  want = (n @ (p["w_in"][0] + p["w_in"][1]) + p["b_in"]) @ p["w_out"] + p["b_out"]
  np.testing.assert_allclose(gate.apply({"params": p}, h, lens, 0), want, rtol=1e-4, atol=1e-5)
  mlp = MainGate(lm, 4, 3, step_input=False)
  assert not np.allclose(mlp.apply({"params": p}, h, lens, 0), want, atol=1e-3)


def test_gate_views_of_the_experiment():
  x, _, _ = pp.make_batch(jax.random.key(4), 3, 1, 8)
  for view in pp.GATES:
    model = pp.Ponder(8, 4, 5, gate=view)
    y, lam = model(model.init(jax.random.key(5)), x)
    assert y.shape == lam.shape == (5, 3) and bool(((lam > 0) & (lam < 1)).all())
