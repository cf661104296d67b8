"""Smoke test of the benchmark harness (benchmarks/) on a tiny GPT-NeoX shape, both sides.

With the same weights on both sides, the peer's soft-token BPTT loss equals slnjax's and
`generate` writes the same greedy tokens as `sln.rollout`: the two sides compute the same
thing. Then the goals and the report are computed from the rows.
"""
import jax
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from benchmarks import adaptive, bptt, decoding, harness, report  # noqa: E402
from slnjax import lobes  # noqa: E402
from slnjax.kernels import few_rows  # noqa: E402
from slnjax import convert  # noqa: E402

CFG = lobes.tiny("neox")


def _peer(params, path):
  convert.save_hf(str(path), CFG, params)
  return transformers.GPTNeoXForCausalLM.from_pretrained(str(path)).float().eval()


def test_harness_both_sides_agree_and_report_renders(tmp_path):
  harness.configure_torch()
  _, params, _ = bptt.build(CFG, 4, turn=4)
  peer = _peer(params["left"], tmp_path / "hf")

  row = bptt.run_case(CFG, 4, None, 1, turn=4, peer=peer, params=params)
  assert row["torch"]["loss"] == pytest.approx(row["slnjax"]["loss"], rel=1e-5)
  assert row["slnjax"]["temp_bytes"] > 0 and row["torch"]["peak_increase_bytes"] >= 0
  # saved for backward: at least the prompt's and every soft token's hidden states
  assert row["torch"]["saved_bytes"] > (8 + 4) * CFG.d_model * 4 * CFG.n_layers

  # The lobe as configured (scanned, decoded unrolled on a CPU), with Eigen dots, on the kernel.
  variants = {k: decoding.VARIANTS[k] for k in ("", "_eigen", "_few_rows")}
  dec = decoding.run_case(CFG, 2, [(4, 2)], 1, peer=peer, new=8, prompt=8, params=params,
                          variants=variants)
  assert dec["same_tokens"]
  assert dec["slnjax_2x4"]["tokens_per_s"] > 0 and dec["torch_generate"]["tokens_per_s"] > 0
  assert dec["slnjax_2x4_eigen"]["compiler_options"] == decoding.EIGEN_DOTS
  assert dec["slnjax_2x4"]["scan_layers"] and not dec["slnjax_2x4"]["decoded_scanned"]
  if few_rows.available():  # else the variant is skipped, with the reason
    assert dec["slnjax_2x4_few_rows"]["decode_kernel"] == "cpu_few_rows"
  else:
    assert dec["skipped_few_rows"] == few_rows.why_unavailable()
  assert 0 < dec["slnjax_2x4"]["of_bound"] and dec["bound"]["s"] > 0
  assert row["bound"]["s"] > 0 and set(row["bound"]["passes"]) == {"forward", "recompute",
                                                                     "backward"}
  assert dec["roofline"]["step_bytes"] == decoding.step_bytes(CFG, 2, 8 + 8)
  assert dec["roofline"]["stream_bytes_per_s"] == max(dec["roofline"]["stream_rates"]) > 0
  assert dec["roofline"]["head_s"] > 0
  assert dec["roofline"]["head_kernel_s"] is None  # vocab 260: the head stays an XLA dot
  if few_rows.available():
    assert decoding.kernel_head_seconds(CFG.replace(vocab_size=264), 2, reps=1) > 0
  assert decoding.kernel_head_seconds(CFG.replace(vocab_size=264), 1, reps=1) is None

  ada = adaptive.run(CFG, 2, 1, max_turns=3, turn=4, prompt=8)
  assert ada["approve_after_turn_1"]["mean_turns"] == 1.0
  assert ada["idl_limit"]["mean_turns"] == 3.0 and ada["single_turn"]["mean_turns"] == 1.0

  mem = [{"impl": "appendonly", "n_tokens": n, **{k: row["slnjax"][k] for k in (
      "temp_bytes", "argument_bytes", "output_bytes")}} for n in (32, 256)]
  side = {"load_before": harness.load(), "load_after": harness.load(), "wall_s": 1.0}
  res = {"date": "today", "command": "test", "quick": True, "machine": harness.machine(),
         "load_at_start": harness.load(), "load_at_end": harness.load(), "wall_s": 1.0,
         "comparisons": {"bptt": {"rows": [{**row, "n_tokens": 32}], **side},
                         "decoding": {"rows": [dec], **side},
                         "adaptive": {"rows": [ada], **side}, "memory": {"rows": mem}}}
  res["goals"] = report.goals(res)
  assert {g["id"] for g in res["goals"]} == {
      "bptt_bound_scanned", "bptt_speed_scanned", "bptt_memory_scanned",
      "memory_growth_scanned", "decode_b2_bound", "decode_b2", "early_halt"}
  assert row["layers"] == "scanned"
  md = report.markdown(res)
  assert "## 1. Soft-token BPTT" in md and "## 4. Memory growth" in md and "torch_generate" in md
  assert "memory-bandwidth ceiling" in md and "The LM head's product alone" in md
  assert "## Against the physical limits" in md and harness.machine()["cpu"] in md
  assert "of the bound" in next(g for g in res["goals"] if g["id"] == "decode_b2")["detail"]
  assert ada["single_turn"]["of_bound"] > 0


def test_decoding_ceiling_counts_every_weight_read_per_token_and_the_cache():
  n = lobes.param_count(lobes.init(CFG, jax.random.key(0)))
  emb = CFG.vocab_size * CFG.d_model
  b = decoding.step_bytes(CFG, 3, 10)
  assert b["weights"] == 4 * (n - emb)  # the input embedding is a row lookup
  assert b["cache"] == 4 * 2 * CFG.n_layers * 3 * CFG.kv_heads * 10 * CFG.hd
  tied = decoding.step_bytes(CFG.replace(tie_embeddings=True), 3, 10)
  assert tied["weights"] == 4 * (n - emb)  # no lm_head: the embedding is the head
  r = decoding.roofline(CFG, 3, new=4, prompt=6, rate=2e9)
  assert r["tokens_per_s"] == pytest.approx(3 * 2e9 / b["total"])


def test_roofline_bounds():
  from benchmarks import roofline
  rates = {"bytes_per_s": 1e9, "flops_per_s": 1e12}
  one = roofline.chunk(CFG, 2, 1, 5, 10)
  assert one["bytes"] == sum(decoding.step_bytes(CFG, 2, 10)[k] for k in ("weights", "cache"))
  back = roofline.chunk(CFG, 2, 1, 5, 10, backward=True)
  cache = decoding.step_bytes(CFG, 2, 10)["cache"]
  assert back["flops"] == 2 * one["flops"] and back["bytes"] == one["bytes"] + 2 * cache
  d = roofline.decode_bound(CFG, 2, 6, 4, rates)
  assert d["by"] == "memory" and d["s"] == pytest.approx(d["memory_s"])
  b = roofline.bptt_bound(CFG, 4, rates, prompt=6)
  assert b["s"] == pytest.approx(sum(p["s"] for p in b["passes"].values()))
  assert b["passes"]["forward"]["s"] == b["passes"]["recompute"]["s"]
