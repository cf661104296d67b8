"""Assemblies: every ablation kind runs; shared weights; encoder and decoder around the loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import lobes, loop, sln, wide

LOOP = loop.LoopConfig(turn_len=3, max_turns=2, threshold=None)
IDS = jnp.full((2, 4), 5, jnp.int32)
LEN = jnp.array([4, 2])


DIALOGUE_KINDS = sorted(set(sln.KINDS) - set(wide.KINDS))  # wide kinds: tests/test_wide.py


def test_kinds_cover_the_ablation_rows():
  assert set(DIALOGUE_KINDS) == {"single", "self_reflection", "homogeneous", "tall",
                                 "lateralized"}
  assert {"wide", "lateralized_wide"} <= set(sln.KINDS)


@pytest.mark.parametrize("kind", DIALOGUE_KINDS)
def test_every_kind_rolls_out(kind):
  model = sln.build(kind, lobes.tiny(), None, LOOP)
  params = sln.init(model, jax.random.key(0))
  assert set(params) == set(model.lobe_names)
  d = jax.jit(sln.rollout, static_argnums=0)(model, params, IDS, LEN, jax.random.key(1))
  assert d.left_ids_NBM.shape == (2, 2, 3)
  np.testing.assert_array_equal(d.turns_B, 2)


def test_self_reflection_shares_weights_and_homogeneous_copies():
  m = sln.build("self_reflection", lobes.tiny(), None, LOOP)
  p = sln.init(m, jax.random.key(0))
  left, right = sln.roles(m, p)
  assert left is right and m.trainable == ("left",)
  h = sln.build("homogeneous", lobes.tiny(), None, LOOP)
  hp = sln.init(h, jax.random.key(0))
  for a, b in zip(jax.tree.leaves(hp["left"]), jax.tree.leaves(hp["right"])):
    np.testing.assert_array_equal(a, b)
  assert h.trainable == ("left",) and h.spec.tall


def test_encoder_feeds_the_loop_and_decoder_reads_the_last_turn():
  m = sln.build("lateralized", lobes.tiny(), None, LOOP, encoder=lobes.tiny(n_layers=1),
                decoder=lobes.tiny(n_layers=1))
  p = sln.init(m, jax.random.key(0))
  g = jax.jit(jax.grad(lambda p: sln.unroll(m, p, IDS, LEN, jax.random.key(1)
                                            ).score_logit_NB.sum()))(p)
  assert float(jnp.abs(g["encoder"]["embedding"]).sum()) > 0
  d = jax.jit(sln.rollout, static_argnums=0)(m, p, IDS, LEN, jax.random.key(1))
  tgt = jnp.array([[7, 8, 9], [10, 11, 12]])
  lp = jax.jit(sln.decode_answer, static_argnums=0)(m, p, IDS, LEN, d, tgt)
  # Example 1 by hand: [prompt[:2], last turn, target] through the decoder.
  last = d.left_ids_NBM[d.turns_B[1] - 1, 1]
  seq = jnp.concatenate([sln.encode(m, p, IDS)[1, :2],
                         lobes.embed_ids(m.decoder, p["decoder"], jnp.concatenate([last, tgt[1]]))])
  logits = lobes.apply(m.decoder, p["decoder"], embeds=seq[None])["logits_BTV"][0]
  ref = jax.nn.log_softmax(logits[4:7])[jnp.arange(3), tgt[1]]
  np.testing.assert_allclose(lp[1], ref, rtol=1e-5)


def test_bad_assemblies():
  with pytest.raises(ValueError, match="Unknown SLN kind"):
    sln.build("wider", lobes.tiny())
  with pytest.raises(ValueError, match="encoder d_model"):
    sln.build("lateralized", lobes.tiny(), None, LOOP, encoder=lobes.tiny(d_model=16))
