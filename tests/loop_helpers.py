"""Tiny dialogue set-ups shared by the loop tests."""
import jax
import jax.numpy as jnp

from slnjax import lobes, loop


def make(tall=False, f64=False, **loop_kw):
  dt = dict(dtype="float64", param_dtype="float64") if f64 else {}
  lc = lobes.tiny("llama", score_input=True, **dt)
  rc = lobes.tiny("neox", score_head=True, lm_head=tall, **dt)
  kw = dict(turn_len=3, max_turns=3, threshold=None, mode="soft")
  kw.update(loop_kw)
  spec = loop.DialogueSpec(lc, rc, tall=tall, loop=loop.LoopConfig(**kw))
  pl = lobes.init(lc, jax.random.key(0))
  pr = lobes.init(rc, jax.random.key(1))
  return spec, pl, pr


def prompts(B=3, P=5, seed=2):
  ids = jax.random.randint(jax.random.key(seed), (B, P), 4, 260)
  plen = jnp.array([P, 2, 4, 3, 5, 1][:B])
  return ids, plen
