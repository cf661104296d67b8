"""FLOP counting (slnjax/flops.py): hand-computed counts and XLA's cost analysis."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slnjax import flops, lobes, sln
from slnjax.lobes.config import LobeConfig
from slnjax.loop import LoopConfig

# d_model 4, 1 layer, 2 heads of width 2 (1 kv head), d_ff 8, vocab 10. Per token and layer:
# q 2*4*4 = 32, k and v 2*4*2 each = 32, o 32, gated MLP 3 * 2*4*8 = 192: 288 in all.
# Attention: 2 products * 2 * 2 heads * width 2 = 16 per attended position.
# LM head: 2*4*10 = 80 per row; score head 2*4 = 8.
TINY = LobeConfig(vocab_size=10, d_model=4, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=8)


def test_lobe_forward_by_hand():
  # 3 tokens after 2 cached ones attend to 3 + 4 + 5 = 12 positions.
  assert flops.lobe_forward_flops(TINY, 3, 2) == 3 * 288 + 16 * 12 + 3 * 80
  assert flops.lobe_forward_flops(TINY, 3, 2, logit_rows=1) == 3 * 288 + 16 * 12 + 80
  # dense: every token charged 2 + 3 positions
  assert flops.lobe_forward_flops(TINY, 3, 2, causal=False) == 3 * 288 + 16 * 15 + 3 * 80
  two = TINY.replace(n_layers=2, score_head=True, lm_head=False)
  assert flops.lobe_forward_flops(two, 1, 0) == 2 * (288 + 16) + 8
  with pytest.raises(ValueError, match="no LM head"):
    flops.lobe_forward_flops(two, 1, 0, logit_rows=1)


def test_single_dialogue_by_hand():
  model = sln.build("single", TINY, None, LoopConfig(turn_len=2, max_turns=3, mode="hard"))
  prefill = 3 * 288 + 16 * 6 + 80  # prompt of 3, logits at its last token
  unit = lambda ctx: 288 + 16 * (ctx + 1) + 80  # one written token after ctx positions
  one = prefill + unit(3) + unit(4)
  two = one + unit(5) + unit(6)
  got = flops.dialogue_flops(model, np.array([1, 2, 0]), np.array([3, 3, 3]))
  np.testing.assert_array_equal(got, [one, two, prefill])


def test_lateralized_soft_dialogue_by_hand():
  model = sln.build("lateralized", TINY, TINY, LoopConfig(turn_len=1, max_turns=2, mode="soft"))
  emit = 2 * 10 * (4 + 4)  # soft weights times both lobes' embeddings
  kv = 2 * 2 * 4 * 2  # the k and v projections of one token (1 kv head of width 2)
  left_prefill = 2 * 288 + 16 * 3 + 80 + emit
  right_prefill = 2 * kv  # it only fills the critic's prompt cache: k and v of the 1 layer
  left_unit = kv  # its emission is replaced by the one after the score: only k, v are read
  critic_read = 288 + 16 * 3 + 8  # the turn after the 2-token prompt cache, a score head
  score_fed = 288 + 16 * 4 + 80 + emit  # the score token read by the left lobe
  want = left_prefill + right_prefill + left_unit + critic_read + score_fed
  d = {"turns_B": np.array([1])}
  assert flops.dialogue_flops(model, d, 2)[0] == want


def test_tall_dialogue_counts_both_writers():
  loop_cfg = LoopConfig(turn_len=2, max_turns=2, mode="hard")
  tall = sln.build("tall", TINY, TINY, loop_cfg)
  single = sln.build("single", TINY, None, loop_cfg)
  t, s = (flops.dialogue_flops(m, 2, 3)[()] for m in (tall, single))
  assert t > 2 * s  # the right lobe writes too and each lobe reads the other's turns
  # more turns, more work; each example its own count
  f = flops.dialogue_flops(tall, np.array([0, 1, 2]), np.array([3, 3, 3]))
  assert f[0] < f[1] < f[2] == t


@pytest.mark.parametrize("family,tol", [
    ("llama", 0.02), pytest.param("neox", 0.06, marks=pytest.mark.slow)])
def test_matches_xla_cost_analysis(family, tol):
  """One lobe forward over a prompt: our count (dense attention, as XLA computes it) against
  XLA's count of the compiled program. Unrolled layers: XLA counts a loop body once. XLA
  also counts elementwise work (neox's exact GELU is an erf polynomial), hence the margin."""
  cfg = LobeConfig(vocab_size=512, d_model=256, n_layers=2, n_heads=4, d_ff=1024, family=family,
                   n_kv_heads=2 if family == "llama" else None, scan_layers=False)
  params = lobes.init(cfg.replace(scan_layers=True), jax.random.key(0))
  params = lobes.with_layer_layout(params, False)
  ids = jnp.zeros((2, 128), jnp.int32)
  fn = lambda p, i: lobes.apply(cfg, p, ids=i)["logits_BTV"]
  ca = jax.jit(fn).lower(params, ids).compile().cost_analysis()
  xla = (ca[0] if isinstance(ca, list) else ca)["flops"]
  ours = 2 * flops.lobe_forward_flops(cfg, 128, 0, causal=False)
  assert 1 - tol < ours / xla <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("kind,mode", [
    ("lateralized", "soft"),
    ("single", "hard"), ("tall", "hard"), ("self_reflection", "hard")])
def test_dialogue_matches_xla_cost_analysis(kind, mode):
  """A whole dialogue of one turn of one token (so that every loop body runs once and XLA's
  count is the program's): prefill, the turn, the critic, the score fed back."""
  lc = LobeConfig(vocab_size=512, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=1024,
                  scan_layers=False)
  model = sln.build(kind, lc, lc, LoopConfig(turn_len=1, max_turns=1, mode=mode,
                                             threshold=None))
  params = sln.init(model, jax.random.key(0))
  ids, plen = jnp.zeros((2, 4), jnp.int32), jnp.full((2,), 4, jnp.int32)
  fn = lambda p, i, n: sln.rollout(model, p, i, n, jax.random.key(1))
  ca = jax.jit(fn).lower(params, ids, plen).compile().cost_analysis()
  xla = (ca[0] if isinstance(ca, list) else ca)["flops"]
  ours = flops.dialogue_flops(model, np.ones(2, int), np.asarray(plen)).sum()
  assert 0.98 < ours / xla <= 1.0
