"""Soft tokens: forward values, gradient semantics, sampling statistics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import soft_tokens


def _logits(V=7, B=3, seed=0):
  return jax.random.normal(jax.random.key(seed), (B, V)) * 2.0


@pytest.mark.parametrize("mode", ["straight_through", "gumbel_st", "hard", "greedy"])
def test_hard_forward_is_exactly_one_hot(mode):
  tok = soft_tokens.sample(_logits(), mode, jax.random.key(1), tau=0.5)
  w = np.asarray(tok.weights_BV)
  np.testing.assert_array_equal(w, np.eye(w.shape[1])[np.asarray(tok.ids_B)])


def test_straight_through_backward_is_softmax_gradient():
  logits, tau = _logits(), 0.7
  c = jax.random.normal(jax.random.key(2), logits.shape)
  f_st = lambda l: jnp.sum(c * soft_tokens.sample(l, "straight_through", jax.random.key(3),
                                                   tau=tau).weights_BV)
  f_soft = lambda l: jnp.sum(c * jax.nn.softmax(l / tau))
  np.testing.assert_allclose(jax.grad(f_st)(logits), jax.grad(f_soft)(logits), atol=1e-6)


def test_gumbel_st_backward_is_gumbel_softmax_gradient():
  logits, tau, key = _logits(), 0.5, jax.random.key(4)
  c = jax.random.normal(jax.random.key(2), logits.shape)
  g = jax.random.gumbel(key, logits.shape)
  f_st = lambda l: jnp.sum(c * soft_tokens.sample(l, "gumbel_st", key, tau=tau).weights_BV)
  f_ref = lambda l: jnp.sum(c * jax.nn.softmax((l + g) / tau))
  np.testing.assert_allclose(jax.grad(f_st)(logits), jax.grad(f_ref)(logits), atol=1e-6)


def test_hard_has_no_gradient_and_soft_is_softmax():
  logits = _logits()
  g = jax.grad(lambda l: jnp.sum(soft_tokens.sample(l, "hard", jax.random.key(0)).weights_BV
                                 * jnp.arange(7.0)))(logits)
  assert np.all(np.asarray(g) == 0)
  tok = soft_tokens.sample(logits, "soft", tau=0.3)
  np.testing.assert_allclose(tok.weights_BV, jax.nn.softmax(logits / 0.3), rtol=1e-6)
  np.testing.assert_array_equal(tok.ids_B, jnp.argmax(logits, -1))


def test_sampling_modes_share_ids_for_one_key():
  logits, key = _logits(), jax.random.key(9)
  ids = [soft_tokens.sample(logits, m, key, tau=0.5).ids_B
         for m in ("hard", "straight_through", "gumbel", "gumbel_st")]
  for other in ids[1:]:
    np.testing.assert_array_equal(ids[0], other)


@pytest.mark.parametrize("mode", ["hard", "gumbel_st"])
def test_sampling_frequencies_match_softmax(mode):
  V, n = 5, 40_000
  logits_V = jnp.array([1.0, 0.0, -1.0, 2.0, 0.5])
  keys = jax.random.split(jax.random.key(0), n)
  ids = jax.jit(jax.vmap(lambda k: soft_tokens.sample(logits_V[None], mode, k,
                                                      tau=0.5).ids_B[0]))(keys)
  freq = np.bincount(np.asarray(ids), minlength=V) / n
  p = np.asarray(jax.nn.softmax(logits_V))
  # 5 standard errors of a binomial proportion: fails only on a real bias.
  np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n))


def test_logp_is_behaviour_log_prob_and_temperature():
  logits = _logits()
  tok = soft_tokens.sample(logits, "hard", jax.random.key(5), temperature=2.0)
  lp = jax.nn.log_softmax(logits / 2.0)
  np.testing.assert_allclose(tok.logp_B, lp[jnp.arange(3), tok.ids_B], rtol=1e-6)


def test_embed_uses_receiver_matrix():
  logits = _logits()
  E = jax.random.normal(jax.random.key(7), (7, 4))
  tok = soft_tokens.sample(logits, "soft", tau=1.0)
  np.testing.assert_allclose(soft_tokens.embed(tok, E, "soft"), tok.weights_BV @ E, rtol=1e-5)
  hard = soft_tokens.sample(logits, "greedy")
  np.testing.assert_allclose(soft_tokens.embed(hard, E, "greedy"), E[hard.ids_B])


def test_unknown_mode_and_missing_rng():
  with pytest.raises(ValueError, match="Unknown soft-token mode"):
    soft_tokens.sample(_logits(), "softish")
  with pytest.raises(ValueError, match="rng"):
    soft_tokens.sample(_logits(), "gumbel")
