"""RESULTS-style Markdown from the accelerator benchmark's JSON (rebuilt after each section)."""
from __future__ import annotations

from benchmarks.accelerator import shapes

GOALS = "train-step MFU >= 40% at 410M bf16; BPTT >= 2x torch; decoding >= 2x generate at " \
        "batch 8 and >= 1.5x at batch 64"


def limits(res: dict) -> dict:
  """Peak FLOP/s and bandwidths to state the figures against: the datasheet and measured
  figures of an H200 (or those given on the command line), and this run's own probe."""
  out = {}
  names = [g.get("name", "") for g in res["machine"].get("gpus", [])]
  probe = next(iter(res["sections"].get("device", {}).get("rows", [])), {})
  names.append(probe.get("device_kind", ""))
  if any("H200" in n for n in names):
    h = shapes.H200
    out.update(datasheet_flops=h["bf16_dense_flops"], measured_flops=h["bf16_measured_flops"],
               datasheet_bw=h["hbm_bytes_per_s"], measured_bw=h["hbm_measured_bytes_per_s"])
  given = res.get("given_limits") or {}
  out.update({k: v for k, v in given.items() if v})
  if probe.get("platform") not in (None, "cpu"):
    out.update(probe_flops=probe.get("matmul_flops_per_s"), probe_bw=probe.get("copy_bytes_per_s"))
  return out


def _rows(res, section, **match):
  rows = res["sections"].get(section, {}).get("rows", [])
  return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def _b(x):
  return "—" if x is None else f"{x / 2**30:.2f} GiB" if x >= 2**28 else f"{x / 2**20:.1f} MiB"


def _pct(x):
  return "—" if x is None else f"{100 * x:.1f}%"


def _f(x, fmt=".3g"):
  return "—" if x is None else format(x, fmt)


def _ratio(a, b):
  return None if not a or not b else a / b


def summary(res: dict) -> dict:
  """MFUs, speed-ups and the goals, from the rows."""
  lim, out = limits(res), {"train": [], "bptt": [], "decoding": [], "goals": []}
  for r in _rows(res, "train"):
    f = r.get("model_flops_per_s")
    out["train"].append({"lobe": r["lobe"], "remat": r["remat"], **{
        f"mfu_vs_{k}": _ratio(f, lim.get(f"{k}_flops")) for k in ("datasheet", "measured",
                                                                   "probe")}})
  for sl in _rows(res, "bptt", side="slnjax"):
    pt = next(iter(_rows(res, "bptt", side="torch", n_tokens=sl["n_tokens"])), {})
    out["bptt"].append({"n_tokens": sl["n_tokens"], "speedup": _ratio(pt.get("min_s"),
                                                                      sl.get("min_s"))})
  for sl in _rows(res, "decoding", side="slnjax"):
    pt = next(iter(_rows(res, "decoding", side="torch_generate", batch=sl["batch"])), {})
    step = sl.get("step_bytes", {}).get("total")
    row = {"batch": sl["batch"], "speedup": _ratio(sl.get("tokens_per_s"), pt.get("tokens_per_s"))}
    for k in ("datasheet", "measured", "probe"):
      bw = lim.get(f"{k}_bw")
      row[f"ceiling_{k}"] = sl["batch"] * bw / step if bw and step else None
      row[f"of_ceiling_{k}"] = _ratio(sl.get("tokens_per_s"), row[f"ceiling_{k}"])
    out["decoding"].append(row)
  mfu = [t["mfu_vs_datasheet"] for t in out["train"] if t["lobe"] == "410m" and
         t["mfu_vs_datasheet"] is not None]
  goal = lambda name, got, need: out["goals"].append(
      {"goal": name, "value": got, "need": need, "met": None if got is None else got >= need})
  goal("train-step MFU at 410M (best of remat settings, vs datasheet)", max(mfu, default=None),
       0.40)
  for b in out["bptt"]:
    goal(f"BPTT speed-up at {b['n_tokens']} tokens", b["speedup"], 2.0)
  for d in out["decoding"]:
    if d["batch"] in (8, 64):
      goal(f"decoding speed-up at batch {d['batch']}", d["speedup"], 2.0 if d["batch"] == 8
           else 1.5)
  return out


def markdown(res: dict) -> str:
  s, lim, m = summary(res), limits(res), res["machine"]
  gpus = "; ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory_total')})"
                   for g in m.get("gpus", [])) or "none found by nvidia-smi"
  tiny = " (--tiny: sizes for a sanity check only)" if res["tiny"] else ""
  known = ", ".join(f"{k} {v:.3g}" for k, v in lim.items() if v)
  out = [f"# Accelerator benchmark{tiny}", "",
         f"Run {m['date']} with `{res['command']}`; {res.get('wall_s', 0):.0f} s in all.",
         f"GPUs: {gpus}. Host: {m['host_cpu']}, {m['cores']} cores, Python {m['python']}.",
         "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", "",
         f"Limits stated against (FLOP/s, bytes/s): {known or 'none known for this device'}.", ""]
  out += _device(res) + _train(res, s) + _bptt(res, s) + _decoding(res, s)
  out += [f"## Goals ({GOALS})", ""]
  out += [f"- {g['goal']}: {_f(g['value'], '.3g')} (need {g['need']}): "
          + {True: "met", False: "NOT met", None: "not measured"}[g["met"]] for g in s["goals"]]
  errs = [(n, c) for n, sec in res["sections"].items() for c in sec.get("children", [])
          if c.get("error")]
  if errs:
    out += ["", "## Errors", ""] + [f"- {n} / {c['spec']}: " + " ".join(c["error"][-400:].split())
                                    for n, c in errs]
  return "\n".join(out) + "\n"


def _device(res):
  dev = next(iter(res["sections"].get("device", {}).get("rows", [])), None)
  if not dev:
    return []
  return ["## 0. Device", "",
          f"{dev['device_kind']} ({dev['platform']}): bf16 matmul {dev['matmul_n']}³ at "
          f"{dev['matmul_flops_per_s'] / 1e12:.1f} TFLOP/s; y = x + 1 over "
          f"{dev['copy_bytes'] / 2**31:.2f} GiB of float32 moves "
          f"{dev['copy_bytes_per_s'] / 1e9:.0f} GB/s (read + write).", ""]


def _train(res, s):
  out = ["## 1. Train step (lateralized SLN, both lobes trained)", "",
         "| lobe | remat | params left / right | tokens/pass | step min (median) | model TFLOP/s "
         "| MFU datasheet / measured / probe | XLA ÷ formula | peak memory | compile |",
         "|---|---|---|---|---|---|---|---|---|---|"]
  for r, t in zip(_rows(res, "train"), s["train"]):
    p, chk = r["params"], r.get("flops_check", {})
    mfu = " / ".join(_pct(t[f"mfu_vs_{k}"]) for k in ("datasheet", "measured", "probe"))
    out.append(f"| {r['lobe']} | {r['remat']} | {p['left'] / 1e6:.1f} M / {p['right'] / 1e6:.1f} M "
               f"| {r['tokens_per_pass']} | {r['min_s'] * 1e3:.1f} ({r['median_s'] * 1e3:.1f}) ms "
               f"| {r['model_flops_per_s'] / 1e12:.2f} | {mfu} "
               f"| {_f(chk.get('xla_over_formula'), '.3f')} | {_b(r.get('peak_bytes'))} "
               f"| {r['compile_s']:.0f} s |")
  return out + ["", "Model FLOPs: 6 x matmul weights x tokens + attention (train_step.py); the "
                "critic reads two sequences per example. MFU: model FLOPs per second over the "
                "peak. XLA ÷ formula above 1 with remat: the recomputation.", ""]


def _bptt(res, s):
  out = ["## 2. Soft-token BPTT (batch 1, tau 0.001, gradient to every parameter)", "",
         "| tokens | slnjax min (median) | torch min (median) | speed-up | slnjax peak "
         "| torch peak | slnjax compile |", "|---|---|---|---|---|---|---|"]
  for b in s["bptt"]:
    sl = _rows(res, "bptt", side="slnjax", n_tokens=b["n_tokens"])[0]
    pt = next(iter(_rows(res, "bptt", side="torch", n_tokens=b["n_tokens"])), {})
    out.append(f"| {b['n_tokens']} | {_ms(sl)} | {_ms(pt)} | {_f(b['speedup'], '.2f')}x "
               f"| {_b(sl.get('peak_bytes'))} | {_b(pt.get('peak_bytes'))} "
               f"| {sl['compile_s']:.0f} s |")
  return out + [""]


def _decoding(res, s):
  out = ["## 3. Rollout decoding (greedy, new tokens/s, prefill included)", "",
         "| batch | slnjax tok/s | generate tok/s | speed-up | ceiling tok/s datasheet / "
         "measured / probe | slnjax of ceiling (measured) | slnjax peak | torch peak |",
         "|---|---|---|---|---|---|---|---|"]
  for d in s["decoding"]:
    sl = _rows(res, "decoding", side="slnjax", batch=d["batch"])[0]
    pt = next(iter(_rows(res, "decoding", side="torch_generate", batch=d["batch"])), {})
    ceil = " / ".join(_f(d[f"ceiling_{k}"], ".0f") for k in ("datasheet", "measured", "probe"))
    out.append(f"| {d['batch']} | {_f(sl.get('tokens_per_s'), '.0f')} "
               f"| {_f(pt.get('tokens_per_s'), '.0f')} | {_f(d['speedup'], '.2f')}x | {ceil} "
               f"| {_pct(d['of_ceiling_measured'])} | {_b(sl.get('peak_bytes'))} "
               f"| {_b(pt.get('peak_bytes'))} |")
  return out + ["", "Ceiling: batch x bandwidth / bytes a decoded token must read (every weight "
                "but the input embedding, and the KV cache at its final length).", ""]


def _ms(r):
  return "—" if not r.get("min_s") else f"{r['min_s']:.3f} ({r['median_s']:.3f}) s"
