"""Goals and the markdown report (benchmarks/RESULTS.md) from the results dict."""
from __future__ import annotations

import os
import re

MiB = 2**20
HERE = os.path.dirname(os.path.abspath(__file__))


def _bptt_row(res, n=32, depth=None, lateralized=False, layers="scanned"):
  for r in res.get("comparisons", {}).get("bptt", {}).get("rows", []):
    if (r["n_tokens"], r["depth"], r["lateralized"], r.get("layers", "scanned")) == (
        n, depth, lateralized, layers):
      return r
  return None


PEER_SPEEDUP = 1.2  # every row with the default configuration, against the peer
BPTT_OF_BOUND = 0.6
DECODE_OF_BOUND = {1: 0.85, 8: 0.6}  # batch 1; any other batch: batch 8's


def default_runner(row):
  """The decoding runner of the lobe as configured (no suffix): "slnjax_<turns>x<len>"."""
  names = [k for k in row if re.fullmatch(r"slnjax_\d+x\d+", k)]
  return names[0] if names else None


def _impossible(peer_fraction, speedup):
  """A note where beating the peer by `speedup` would need more than the bound allows."""
  if peer_fraction * speedup <= 1:
    return ""
  return (f"; {speedup}x would need {peer_fraction * speedup:.0%} of the bound: physically "
          "impossible here")


def _goal(gid, text, target, value, met, detail=""):
  return {"id": gid, "goal": text, "target": target, "value": value, "met": met,
          "detail": detail}


def goals(res) -> list[dict]:
  out = []
  for lay in ("scanned", "unrolled"):
    r = _bptt_row(res, layers=lay)
    if not r or "torch" not in r:
      continue
    sl, pt = r["slnjax"], r["torch"]
    speed = pt["min_s"] / sl["min_s"]
    detail = f"slnjax {sl['min_s']:.2f} s vs torch {pt['min_s']:.2f} s (min of reps)"
    if "bound" in r:
      bs = r["bound"]["s"]
      detail += (f"; the bound is {bs:.2f} s, torch at {bs / pt['min_s']:.0%} of it"
                 + _impossible(bs / pt["min_s"], PEER_SPEEDUP))
      out.append(_goal(f"bptt_bound_{lay}", f"soft-token BPTT at 32 tokens ({lay} layers): >= "
                       f"{BPTT_OF_BOUND:.0%} of its bound", f">= {BPTT_OF_BOUND:.0%}",
                       round(sl["of_bound"], 2), sl["of_bound"] >= BPTT_OF_BOUND,
                       f"bound {bs:.2f} s ({r['bound']['by']}-bound; forward / recompute / "
                       "backward " + " / ".join(f"{p['s']:.2f}" for p in
                                                r["bound"]["passes"].values())
                       + f" s) vs slnjax {sl['min_s']:.2f} s"))
    out.append(_goal(f"bptt_speed_{lay}", f"soft-token BPTT at 32 tokens ({lay} layers): >= "
                     f"{PEER_SPEEDUP}x faster than torch", f">= {PEER_SPEEDUP}x", round(speed, 2),
                     speed >= PEER_SPEEDUP, detail))
    # torch's activation memory: the bytes autograd saves for backward (deterministic); its
    # peak RSS increase less its gradient buffers is shown too (it moves with the allocator).
    ref = pt.get("saved_bytes", pt["activation_bytes"])
    act = sl["temp_bytes"] / max(ref, 1)
    tot = (sl["temp_bytes"] + sl["output_bytes"]) / max(pt["peak_increase_bytes"], 1)
    out.append(_goal(
        f"bptt_memory_{lay}", f"soft-token BPTT at 32 tokens ({lay} layers): <= half of torch's "
        "activation memory",
        "<= 0.5x", round(act, 2), act <= 0.5,
        f"slnjax temporaries {sl['temp_bytes'] / MiB:.0f} MiB (all of the step's transients) vs "
        f"torch's tensors saved for backward {ref / MiB:.0f} MiB (its peak RSS increase less "
        f"its gradient buffers: {pt['activation_bytes'] / MiB:.0f} MiB); counting gradients on "
        f"both sides: slnjax outputs + temporaries {(sl['temp_bytes'] + sl['output_bytes']) / MiB:.0f}"
        f" MiB vs torch peak RSS increase {pt['peak_increase_bytes'] / MiB:.0f} MiB ({tot:.2f}x)"))
  mem = {(m["impl"], m.get("layers", "scanned"), m["n_tokens"]): m for m in
         res.get("comparisons", {}).get("memory", {}).get("rows", [])}
  for lay in ("scanned", "unrolled"):
    if ("appendonly", lay, 32) in mem and ("appendonly", lay, 256) in mem:
      a = mem[("appendonly", lay, 32)]["temp_bytes"]
      b = mem[("appendonly", lay, 256)]["temp_bytes"]
      g = b / a
      out.append(_goal(f"memory_growth_{lay}", f"full-BPTT temporaries, 32 -> 256 tokens ({lay} "
                       "layers): <= 1.5x", "<= 1.5x", round(g, 2), g <= 1.5,
                       f"appendonly temporaries {a / MiB:.1f} -> {b / MiB:.1f} MiB"))
  for row in res.get("comparisons", {}).get("decoding", {}).get("rows", []):
    name = default_runner(row)
    if name is None:
      continue
    d, b = row[name], row["batch"]
    want = DECODE_OF_BOUND.get(b, DECODE_OF_BOUND[8])
    if "bound" in row:
      out.append(_goal(f"decode_b{b}_bound", f"decoding, batch {b} (default config): >= "
                       f"{want:.0%} of its bound", f">= {want:.0%}", round(d["of_bound"], 2),
                       d["of_bound"] >= want,
                       f"{name} {d['min_s']:.2f} s vs bound {row['bound']['s']:.2f} s "
                       f"({row['bound']['by']}-bound: weights and cache over "
                       f"{row['bound']['rates']['bytes_per_s'] / 1e9:.1f} GB/s)"))
    if "torch_generate" in row:
      g = row["torch_generate"]
      ratio = d["tokens_per_s"] / g["tokens_per_s"]
      extra = ""
      if "bound" in row:
        gf = row["bound"]["s"] / g["min_s"]
        extra = f"; generate at {gf:.0%} of the bound" + _impossible(gf, PEER_SPEEDUP)
      out.append(_goal(f"decode_b{b}", f"decoding, batch {b} (default config): >= "
                       f"{PEER_SPEEDUP}x the new tokens/s of generate", f">= {PEER_SPEEDUP}x",
                       round(ratio, 2), ratio >= PEER_SPEEDUP,
                       f"slnjax ({name}) {d['tokens_per_s']:.1f} tok/s vs generate "
                       f"{g['tokens_per_s']:.1f} tok/s{extra}"))
  for row in res.get("comparisons", {}).get("adaptive", {}).get("rows", []):
    r1 = row["ratio_approve_vs_single_turn"]
    out.append(_goal("early_halt", "a batch approved after turn 1 costs <= 1.3x a single turn",
                     "<= 1.3x", round(r1, 2), r1 <= 1.3,
                     f"approved {row['approve_after_turn_1']['min_s']:.2f} s (mean turns "
                     f"{row['approve_after_turn_1']['mean_turns']:.2f}) vs single turn "
                     f"{row['single_turn']['min_s']:.2f} s vs IDL limit "
                     f"{row['idl_limit']['min_s']:.2f} s"))
  return out


LAYER_NAMES = {"unrolled": " (unrolled layers)", "scanned_scan_decode": " (scanned, decoded "
               "with the layer scan)"}


def _roofline_section(res) -> list[str]:
  """The lead table: every row's time against its bound (benchmarks/roofline.py)."""
  m, C = res["machine"], res["comparisons"]
  L = ["## Against the physical limits", "",
       f"CPU: **{m['cpu']}** ({m['cores']} cores). A row's bound is the sum over its passes "
       "of max(bytes it must move / measured streaming bandwidth, FLOPs / measured matmul "
       "rate) (benchmarks/roofline.py); a row reports bound / its min time.", "",
       "| row | time s | bound s | of the bound | bound by |", "|---|---|---|---|---|"]
  rates = None
  for r in C.get("bptt", {}).get("rows", []):
    if "bound" not in r:
      continue
    b = r["bound"]
    name = f"BPTT {r['n_tokens']} tokens{LAYER_NAMES.get(r.get('layers', 'scanned'), '')}"
    L.append(f"| {name} | {r['slnjax']['min_s']:.2f} | {b['s']:.2f} | "
             f"{b['s'] / r['slnjax']['min_s']:.0%} | {b['by']} |")
    if "torch" in r:
      L.append(f"| {name}, torch | {r['torch']['min_s']:.2f} | {b['s']:.2f} | "
               f"{b['s'] / r['torch']['min_s']:.0%} | {b['by']} |")
    rates = rates or C["bptt"].get("rates")
  for row in C.get("decoding", {}).get("rows", []):
    if "bound" not in row:
      continue
    b = row["bound"]
    rates = rates or b.get("rates")
    for k, d in row.items():
      if isinstance(d, dict) and "tokens_per_s" in d and k != "roofline":
        L.append(f"| decoding b={row['batch']}, {k} | {d['min_s']:.2f} | {b['s']:.2f} | "
                 f"{b['s'] / d['min_s']:.0%} | {b['by']} |")
  for row in C.get("adaptive", {}).get("rows", []):
    for k in ("approve_after_turn_1", "idl_limit", "single_turn"):
      d = row.get(k, {})
      if "bound" in d:
        L.append(f"| adaptive b={row['batch']}, {k} | {d['min_s']:.2f} | "
                 f"{d['bound']['s']:.2f} | {d['of_bound']:.0%} | {d['bound']['by']} |")
  if rates:
    L.append(f"\nMeasured: streaming bandwidth {rates['bytes_per_s'] / 1e9:.1f} GB/s, matmul "
             f"rate {rates['flops_per_s'] / 1e9:.0f} GFLOP/s.")
  return L


def _mib(b):
  return f"{b / MiB:.1f}"


def _t(d):
  return f"{d['min_s']:.2f} / {d['median_s']:.2f}"


def markdown(res) -> str:
  m = res["machine"]
  v = m["versions"]
  L = [f"# Benchmarks: slnjax vs PyTorch + transformers{' (quick run)' if res['quick'] else ''}",
       "",
       f"- Command: `{res['command']}` (total {res['wall_s'] / 60:.1f} min)",
       f"- Date: {res['date']}",
       f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM; {m['platform']}",
       f"- Versions: Python {m['python']}, jax {v['jax']}, jaxlib {v['jaxlib']}, flax "
       f"{v['flax']}, numpy {v['numpy']}, torch {v['torch']}, transformers {v['transformers']}",
       f"- Threads: {m['threads_per_side']} per side (XLA_FLAGS=\"{m['xla_flags']}\", "
       "torch.set_num_threads(2)); fp32; random weights; Pythia-70M-shaped lobes "
       "(`slnjax.lobes.pythia_70m()`, 70.4 M params) and GPTNeoXForCausalLM of the same shape.",
       f"- Load average (1/5/15 min) at start {res['load_at_start']}, at end "
       f"{res['load_at_end']}. The machine is shared: other jobs running at the same time "
       "slow both sides; repetitions of the two sides are interleaved so that a change of load "
       "hits both. Times are min / median of the repetitions, in seconds.",
       ""] + _roofline_section(res) + [
       "", "## Goals", "", "| goal | target | measured | met | detail |", "|---|---|---|---|---|"]
  for g in res["goals"]:
    met = "yes" if g["met"] else "**no**"
    val = f"{g['value']:.0%}" if "%" in g["target"] else f"{g['value']}x"
    L.append(f"| {g['goal']} | {g['target']} | {val} | {met} | {g['detail']} |")
  C = res["comparisons"]
  if "bptt" in C and "rows" in C["bptt"]:
    L += ["", "## 1. Soft-token BPTT (batch 1, prompt 64, tau = 0.001, turns of 32)", "",
          "slnjax: `loop.unroll` (bptt_impl appendonly) + `jax.value_and_grad`; memory from "
          "`jax.jit(f).lower(...).compile().memory_analysis()`. torch: transformers KV cache, "
          "soft tokens fed back via `inputs_embeds = softmax(logits/tau) @ E`; truncated rows "
          "run the turns before the window without autograd. Loss: sum of log p(target) over "
          "the last turn; gradient to every parameter.", "",
          "| tokens | BPTT depth | slnjax time | slnjax MiB args / outputs / temps | torch time "
          "| torch peak RSS increase MiB (of which grads) | torch saved for backward MiB "
          "| speed-up | compile s | of the bound |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in C["bptt"]["rows"]:
      sl = r["slnjax"]
      depth = "full" if r["depth"] is None else f"k={r['depth']}"
      name = (f"{r['n_tokens']}{' (lateralized)' if r['lateralized'] else ''}"
              f"{LAYER_NAMES.get(r.get('layers', 'scanned'), '')}")
      mem = f"{_mib(sl['argument_bytes'])} / {_mib(sl['output_bytes'])} / {_mib(sl['temp_bytes'])}"
      if "torch" in r:
        pt = r["torch"]
        tt = _t(pt)
        tm = f"{_mib(pt['peak_increase_bytes'])} ({_mib(pt['grad_bytes'])})"
        ts = _mib(pt["saved_bytes"]) if "saved_bytes" in pt else "-"
        sp = f"{pt['min_s'] / sl['min_s']:.2f}x"
      else:
        tt = tm = ts = sp = "-"
      frac = f"{sl['of_bound']:.0%}" if "of_bound" in sl else "-"
      L.append(f"| {name} | {depth} | {_t(sl)} | {mem} | {tt} | {tm} | {ts} | {sp} | "
               f"{sl['compile_s']:.0f} | {frac} |")
    L.append(f"\nLoad average before/after: {C['bptt']['load_before']} / "
             f"{C['bptt']['load_after']}; wall {C['bptt']['wall_s']:.0f} s.")
  if "decoding" in C and "rows" in C["decoding"]:
    L += ["", "## 2. Dialogue decoding (greedy, 64-token prompt, 128 new tokens)", "",
          "slnjax: `sln.rollout` (lax.while_loop driver), single lobe, as turns x tokens; "
          "torch: `model.generate(do_sample=False, max_new_tokens=128)`. New tokens per second "
          "(batch x 128 / min wall time, prefill included). Runners: `slnjax_4x32` the lobe "
          "as configured (scanned layers, decoded with unrolled layers on a CPU: "
          "`decode_layers=\"auto\"`); `_scan` decoded with the layer scan; `_eigen` "
          "compiled with XLA:CPU's dot products through Eigen instead of YNNPACK "
          "(`compiler_options={\"xla_cpu_experimental_ynn_fusion_type\": \"\"}` for this "
          "executable only); `_few_rows` also with the decoded tokens' products "
          "(2-8 rows) on slnjax's CPU kernel (`decode_kernel=\"cpu_few_rows\"`).", "",
          "| batch | runner | time | new tokens/s | vs generate | of the bound |",
          "|---|---|---|---|---|---|"]
    for row in C["decoding"]["rows"]:
      ref = row.get("torch_generate", {}).get("tokens_per_s")
      bound = row.get("bound", {}).get("s")
      for k, d in row.items():
        if isinstance(d, dict) and "tokens_per_s" in d and k != "roofline":
          rel = f"{d['tokens_per_s'] / ref:.2f}x" if ref else "-"
          frac = f"{bound / d['min_s']:.0%}" if bound else "-"
          L.append(f"| {row['batch']} | {k} | {_t(d)} | {d['tokens_per_s']:.1f} | {rel} | "
                   f"{frac} |")
    for row in C["decoding"]["rows"]:
      if "roofline" in row:
        r, b = row["roofline"], row["roofline"]["step_bytes"]
        L.append(f"\nBatch {row['batch']}, memory-bandwidth ceiling: a decoded token reads at "
                 f"least {b['total'] / MiB:.0f} MiB (weights without the input embedding "
                 f"{b['weights'] / MiB:.0f} MiB, KV cache {b['cache'] / MiB:.1f} MiB at "
                 f"{row['prompt'] + row['new_tokens']} positions). XLA's one-row dot streamed "
                 f"a 256 MiB matrix at {r['stream_bytes_per_s'] / 1e9:.1f} GB/s "
                 "(before / after the runs: "
                 + " / ".join(f"{x / 1e9:.1f}" for x in r["stream_rates"])
                 + f"), so at most {r['tokens_per_s']:.0f} new tokens/s (prefill left out).")
        if "head_s" in r:
          best = max((d["tokens_per_s"], d["min_s"]) for k, d in row.items()
                     if isinstance(d, dict) and k.startswith("slnjax"))
          step = best[1] / row["new_tokens"]
          L.append(f"The LM head's product alone ([{row['batch']},D] x [D,V], the better of "
                   f"YNNPACK and Eigen) took {r['head_s'] * 1e3:.1f} ms "
                   f"({r['head_bytes'] / r['head_s'] / 1e9:.1f} GB/s of its weights): "
                   f"{r['head_s'] / step:.0%} of the fastest "
                   f"runner's time per new token ({step * 1e3:.1f} ms, prefill included).")
          if r.get("head_kernel_s"):
            L.append(f"On the few-rows kernel (weights packed beforehand) it took "
                     f"{r['head_kernel_s'] * 1e3:.1f} ms "
                     f"({r['head_bytes'] / r['head_kernel_s'] / 1e9:.1f} GB/s).")
    L.append(f"\nLoad average before/after: {C['decoding']['load_before']} / "
             f"{C['decoding']['load_after']}; wall {C['decoding']['wall_s']:.0f} s.")
  if "adaptive" in C and "rows" in C["adaptive"]:
    L += ["", "## 3. Adaptive compute (lateralized, greedy turns of 32, prompt 64)", "",
          "Critic = a second Pythia-shaped lobe with a score head. `approve_after_turn_1`: its "
          "score bias set to +20 (every score ~ 1), threshold 0.5; `idl_limit`: threshold None, "
          "4 turns; `single_turn`: max_turns 1. `sln.rollout` (stops when every example halted).",
          "", "| batch | variant | max turns | mean turns | time | of the bound |",
          "|---|---|---|---|---|---|"]
    for row in C["adaptive"]["rows"]:
      for k in ("approve_after_turn_1", "idl_limit", "single_turn"):
        d = row[k]
        frac = f"{d['of_bound']:.0%}" if "of_bound" in d else "-"
        L.append(f"| {row['batch']} | {k} | {d['max_turns']} | {d['mean_turns']:.2f} | "
                 f"{_t(d)} | {frac} |")
      L.append(f"\nRatios: approved / IDL limit = {row['ratio_approve_vs_limit']:.2f}, "
               f"approved / single turn = {row['ratio_approve_vs_single_turn']:.2f}.")
    L.append(f"Load average before/after: {C['adaptive']['load_before']} / "
             f"{C['adaptive']['load_after']}; wall {C['adaptive']['wall_s']:.0f} s.")
  if "memory" in C and "rows" in C["memory"]:
    rows = C["memory"]["rows"]
    sizes = sorted({r["n_tokens"] for r in rows})
    L += ["", "## 4. Memory growth of full BPTT (compiled temporaries, MiB)", "",
          "Same step as section 1 at batch 1 (arguments 268.7 MiB of parameters; outputs the "
          "loss and the gradient). `scan`: plain autodiff of the decode scan; `scan_remat`: with "
          "a rematerialised body; `appendonly`: the bounded-memory reverse pass.", "",
          "| bptt_impl | " + " | ".join(f"{n} tokens" for n in sizes) + f" | {sizes[-1]}/{sizes[0]} |",
          "|---|" + "---|" * (len(sizes) + 1)]
    for impl, lay in (("appendonly", "scanned"), ("appendonly", "unrolled"), ("scan", "scanned"),
                      ("scan_remat", "scanned")):
      by = {r["n_tokens"]: r["temp_bytes"] for r in rows
            if r["impl"] == impl and r.get("layers", "scanned") == lay}
      if by and sizes[0] in by and sizes[-1] in by:
        L.append(f"| {impl}{' (unrolled layers)' if lay == 'unrolled' else ''} | "
                 + " | ".join(_mib(by[n]) if n in by else "-" for n in sizes)
                 + f" | {by[sizes[-1]] / by[sizes[0]]:.2f}x |")
  errors = {k: r["error"] for k, r in C.items() if "error" in r}
  if errors:
    L += ["", "## Errors", ""] + [f"- {k}: {e}" for k, e in errors.items()]
  analysis = os.path.join(HERE, "ANALYSIS.md")
  if os.path.exists(analysis):
    with open(analysis) as f:
      L += ["", f.read().rstrip()]
  return "\n".join(L) + "\n"
